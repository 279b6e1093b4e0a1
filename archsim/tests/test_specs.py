"""``@FILE`` model lists as editors save them."""

from archsim.specs import model_list


def test_a_model_list_with_a_byte_order_mark_and_crlf_line_ends_is_read(tmp_path):
    listed = tmp_path / "models.txt"
    # As a Windows editor saves it: a UTF-8 byte-order mark, CRLF line ends, a comment and a blank line.
    listed.write_bytes("timm:resnet50\r\n# the paper's\r\n\r\ntimm:vit_base_patch16_224  # ViT\r\n".encode("utf-8-sig"))
    assert model_list([f"@{listed}", "zoo:vit"]) == ["timm:resnet50", "timm:vit_base_patch16_224", "zoo:vit"]
