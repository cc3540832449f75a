"""System checks of the training configuration."""

from __future__ import annotations

from training.checks import artifact_root_writable, lease_below_visibility_timeout


def test_a_writable_artifact_root_outside_media_passes(settings):
    assert artifact_root_writable(None) == []


def test_an_artifact_root_inside_media_is_an_error(settings):
    settings.ARTIFACT_ROOT = settings.MEDIA_ROOT / "artifacts"
    assert [e.id for e in artifact_root_writable(None)] == ["training.E002"]


def test_a_read_only_artifact_root_is_an_error(settings, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    settings.ARTIFACT_ROOT = folder
    try:
        import os

        if os.access(folder, os.W_OK):  # root ignores permissions
            return
        assert [e.id for e in artifact_root_writable(None)] == ["training.E001"]
    finally:
        folder.chmod(0o700)


def test_a_lease_longer_than_the_visibility_timeout_is_a_warning(settings):
    settings.TRAINING_LEASE_SECONDS = 10 * 3600
    assert [w.id for w in lease_below_visibility_timeout(None)] == ["training.W001"]
