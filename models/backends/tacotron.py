"""NVIDIA's pretrained Tacotron 2 + WaveGlow through torch.hub, for the `tacotron2` text-to-speech entry.

The first use downloads the hub repo from GitHub and about 400 MB of checkpoints from NVIDIA NGC into torch's
hub cache. The checkpoints were saved on CUDA, so on a machine without a GPU `torch.load` is mapped to the CPU
while they load. `check()` answers quickly: the cache is looked at first, then one TCP connect to github.com
with a short timeout, so an offline bot marks the entry unavailable with a reason instead of hanging.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

REPO = "NVIDIA/DeepLearningExamples:torchhub"
REPO_DIR = "NVIDIA_DeepLearningExamples_torchhub"  # torch.hub's folder name for REPO
PROBE_ADDRESS: tuple[str, int] = ("github.com", 443)  # tests point this at a closed port
PROBE_TIMEOUT = 2.0
SAMPLE_RATE = 22050


def hub_dir() -> Path:
    """torch.hub's cache folder, found the way torch.hub.get_dir() does, without importing torch."""
    import sys

    if "torch" in sys.modules:
        return Path(sys.modules["torch"].hub.get_dir())
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch"
    )
    return Path(torch_home) / "hub"


def cached() -> bool:
    """Whether the hub repo and both checkpoints are already on disk, so loading needs no network."""
    root = hub_dir()
    # an empty file is an interrupted download, not a checkpoint
    ckpts = [p.name.lower() for p in (root / "checkpoints").glob("*")
             if p.is_file() and p.stat().st_size > 0] if (root / "checkpoints").is_dir() else []
    return (root / REPO_DIR).is_dir() and any("tacotron2" in n for n in ckpts) and any("waveglow" in n for n in ckpts)


def _reachable(address: tuple[str, int], timeout: float) -> str | None:
    """None if a TCP connection opens within `timeout` (DNS included), else why not."""
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                outcome.append(None)
        except OSError as exc:
            outcome.append(str(exc) or type(exc).__name__)

    t = threading.Thread(target=probe, daemon=True)  # a thread, because DNS lookups ignore socket timeouts
    t.start()
    t.join(timeout + 0.5)
    return outcome[0] if outcome else "timed out"


def check() -> tuple[bool, str]:
    """(available, reason), in about PROBE_TIMEOUT seconds at most."""
    if cached():
        return True, "ok (Tacotron 2 + WaveGlow are in the torch hub cache)"
    host, port = PROBE_ADDRESS
    why = _reachable(PROBE_ADDRESS, PROBE_TIMEOUT)
    if why is None:
        return True, "ok (Tacotron 2 + WaveGlow will be downloaded on first use, about 400 MB)"
    return False, (
        f"tacotron2 needs NVIDIA's Tacotron 2 + WaveGlow from torch.hub: they are not in the cache ({hub_dir()}) "
        f"and {host}:{port} cannot be reached ({why}). Connect this machine to the internet once to download them."
    )


_load_lock = threading.Lock()


@contextlib.contextmanager
def _torch_load_on(device: str) -> Iterator[None]:
    """Make NVIDIA's hub code, which calls torch.load(file) bare, load CUDA checkpoints onto `device`."""
    import torch

    original = torch.load

    def load(*args, **kwargs):
        kwargs.setdefault("map_location", device)
        kwargs.setdefault("weights_only", False)  # NVIDIA's checkpoints pickle their training config
        return original(*args, **kwargs)

    with _load_lock:
        torch.load = load
        try:
            yield
        finally:
            torch.load = original


class Tacotron2TTS:
    """Text -> mel spectrogram (Tacotron 2) -> waveform (WaveGlow), 22.05 kHz."""

    def __init__(self, device: str | None = None, report: Callable[[str], None] = lambda m: None) -> None:
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        with _torch_load_on(self.device):
            report("loading Tacotron 2")
            self.tacotron = torch.hub.load(REPO, "nvidia_tacotron2", model_math="fp32", trust_repo=True,
                                           skip_validation=True)
            report("loading WaveGlow")
            waveglow = torch.hub.load(REPO, "nvidia_waveglow", model_math="fp32", trust_repo=True,
                                      skip_validation=True)
            self.utils = torch.hub.load(REPO, "nvidia_tts_utils", trust_repo=True, skip_validation=True)
        self.tacotron = self.tacotron.to(self.device).eval()
        self.waveglow = waveglow.remove_weightnorm(waveglow).to(self.device).eval()

    def synthesize(self, text: str) -> np.ndarray:
        """Float32 audio in [-1, 1] at SAMPLE_RATE."""
        import torch

        seqs, lengths = self.utils.prepare_input_sequence([text], cpu_run=self.device == "cpu")
        with torch.no_grad():
            mel, _, _ = self.tacotron.infer(seqs.to(self.device), lengths.to(self.device))
            audio = self.waveglow.infer(mel)
        return np.clip(audio[0].float().cpu().numpy(), -1.0, 1.0)
