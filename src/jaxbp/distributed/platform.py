"""Accelerator selection: which JAX platform runs, and how many CPU devices it exposes.

Both settings must be made before JAX initialises its backends (before the first array is
created or ``jax.devices()`` is called): the CLI calls them first thing. Afterwards they can
only be checked, and a mismatch is an error — never a silent fallback to another platform.
"""

from __future__ import annotations

import jax

PLATFORMS = ("cpu", "gpu", "tpu")
"""Platform names accepted by :func:`select_platform` (``gpu`` covers CUDA and ROCm)."""

INSTALL_HINTS = {
    "cpu": 'pip install -U "jax"',
    "gpu": 'pip install -U "jax[cuda12]"  (NVIDIA; see the JAX install guide for ROCm)',
    "tpu": 'pip install -U "jax[tpu]"  (on a Cloud TPU VM)',
}


def select_platform(name: str) -> list:
    """Runs JAX on ``name`` only, and returns its devices.

    Sets ``jax_platforms`` (the JAX_PLATFORMS setting) to ``name`` and initialises that backend.
    Called before JAX has initialised, this restricts JAX to the platform; called later, it can
    only confirm that the platform was initialised.

    Args:
      name: ``"cpu"``, ``"gpu"`` or ``"tpu"``.

    Returns:
      ``jax.devices(name)``: every device of the platform, across all processes.

    Raises:
      ValueError: an unknown name.
      RuntimeError: the platform is absent (no plugin, no hardware, or JAX already started on
        another platform) — naming the platform, JAX's reason, and the install line.
    """
    if name not in PLATFORMS:
        raise ValueError(f"platform: unknown {name!r}; valid platforms are {', '.join(PLATFORMS)}")
    previous = jax.config.jax_platforms
    jax.config.update("jax_platforms", name)
    try:
        return jax.devices(name)
    except (RuntimeError, AssertionError) as err:
        jax.config.update("jax_platforms", previous)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RuntimeError(
            f"platform: {name!r} requested but JAX has no usable {name} backend ({reason}); "
            f"install it with: {INSTALL_HINTS[name]}, or choose --platform cpu"
        ) from None


def request_cpu_devices(n: int) -> None:
    """Makes the CPU backend expose ``n`` devices (``jax_num_cpu_devices``, the config form of
    ``XLA_FLAGS=--xla_force_host_platform_device_count=n``).

    Forced CPU devices share the machine's cores: they are for testing sharded code and
    measuring its overhead, not for speed-up.

    Raises:
      ValueError: n is not a positive int.
      RuntimeError: JAX already started with fewer than n CPU devices.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int number of CPU devices, got {n!r}")
    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:
        have = len(jax.local_devices(backend="cpu"))
        if have < n:
            raise RuntimeError(
                f"n: JAX already started with {have} CPU device(s), fewer than the {n} asked "
                f"for; set XLA_FLAGS=--xla_force_host_platform_device_count={n} before starting "
                "Python, or call request_cpu_devices before any JAX operation"
            ) from None
