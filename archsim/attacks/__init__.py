"""Attacks: one class per file behind the :class:`Attack` call shape."""

from archsim.attacks.base import Attack, start_noise, to_uint8
from archsim.attacks.pgd import PGD
from archsim.errors import ArchsimError

ATTACKS: dict[str, type[Attack]] = {"pgd": PGD}


def create_attack(name: str, **options) -> Attack:
    """Build an attack by name with its options (``eps``, ``steps``...)."""
    if name not in ATTACKS:
        raise ArchsimError(f"unknown attack {name!r}; choose from {', '.join(ATTACKS)}")
    return ATTACKS[name](**options)


__all__ = ["Attack", "PGD", "ATTACKS", "create_attack", "start_noise", "to_uint8"]
