"""``art-diffpure convert-adm``: a guided-diffusion checkpoint to a diffusers directory from the command line."""
import torch

from art_diffpure.commands import main

from models.test_convert import SMALL, _small_argv, random_adm_state_dict


def test_cli(tmp_path, capsys):
    ckpt = tmp_path / "adm.pt"
    torch.save(random_adm_state_dict(**SMALL), ckpt)
    assert main(["convert-adm", str(ckpt), str(tmp_path / "o"), *_small_argv()]) == 0
    assert (tmp_path / "o" / "unet" / "config.json").is_file()
    assert (tmp_path / "o" / "scheduler" / "scheduler_config.json").is_file()
    # bad file: clear message, non-zero status
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    assert main(["convert-adm", str(junk), str(tmp_path / "o2"), *_small_argv()]) == 1
    assert "error" in capsys.readouterr().err
    assert main(["convert-adm", str(tmp_path / "missing.pt"), str(tmp_path / "o3")]) == 1
    assert "No checkpoint file" in capsys.readouterr().err
    # learn_sigma=False does not match the 6-channel checkpoint
    assert main(["convert-adm", str(ckpt), str(tmp_path / "o4"), *_small_argv(), "--no-learn-sigma"]) == 1
    assert "mis-shaped" in capsys.readouterr().err
