"""Attacks: one class per file behind the :class:`Attack` call shape, and the factory that makes them from specs
(:mod:`archsim.attacks.factory`)."""

from archsim.attacks.apgd import APGD
from archsim.attacks.base import Attack, NoiseSource, start_noise, to_uint8
from archsim.attacks.external import TorchattacksAttack
from archsim.attacks.factory import ATTACKS, all_attacks, attack_options, create_attack, hold_attack
from archsim.attacks.fgsm import FGSM
from archsim.attacks.lowfreq import LowFrequencyPGD
from archsim.attacks.mifgsm import MIFGSM
from archsim.attacks.pgd import PGD
from archsim.attacks.vmifgsm import VMIFGSM

__all__ = [
    "Attack",
    "APGD",
    "FGSM",
    "LowFrequencyPGD",
    "MIFGSM",
    "PGD",
    "VMIFGSM",
    "TorchattacksAttack",
    "ATTACKS",
    "all_attacks",
    "hold_attack",
    "NoiseSource",
    "attack_options",
    "create_attack",
    "start_noise",
    "to_uint8",
]
