"""Device and CPU-thread setup, shared by pretraining, fine-tuning and the throughput measurement.

Imported by the start-up hook (wait_policy_default): standard library only at module level.
"""
import os

THREADS_ENV = "OMP_NUM_THREADS"
WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
# variables with which a user already chose how OpenMP threads wait (GNU and Intel OpenMP)
WAIT_SETTINGS = (WAIT_POLICY_ENV, "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def requested_threads() -> int | None:
    """``OMP_NUM_THREADS`` when set to a positive integer, else None.

    ``nnUNetv2_train -device cpu`` sets one thread per core and so ignores it; our trainers and
    ``nnUNetv2_ssl_pretrain`` honour it, so that several CPU jobs can share a machine without
    oversubscribing it (measured here: two 2-thread jobs on 2 cores ran 5x slower each)."""
    value = os.environ.get(THREADS_ENV, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def cpu_worker_env(device: str, environ=os.environ) -> dict[str, str]:
    """Environment for nnU-Net commands we start on a CPU: no augmentation or export worker
    processes (on a CPU they only compete with training for the cores), unless the user set them.
    Not for planning: nnunetv2 2.8.1 passes nnUNet_n_proc_DA=0 to torch.set_num_threads there."""
    if device != "cpu":
        return {}
    return {"nnUNet_n_proc_DA": environ.get("nnUNet_n_proc_DA", "0"),
            "nnUNet_def_n_proc": environ.get("nnUNet_def_n_proc", "1")}


def shared_cores_env(device: str, processes: int, environ=os.environ) -> dict[str, str]:
    """OMP_NUM_THREADS for ``processes`` CPU commands that run at once: the cores shared out evenly,
    unless the user chose a number."""
    if device != "cpu" or environ.get("OMP_NUM_THREADS"):
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"OMP_NUM_THREADS": str(max(1, cores // processes))}


def wait_policy_default(environ=os.environ) -> str | None:
    """Set OMP_WAIT_POLICY=PASSIVE unless the user chose how OpenMP threads wait; return what was set.

    OpenMP threads otherwise spin at every barrier before they sleep, taking a core from whatever else
    runs. libgomp reads the variable once, when torch loads it, so this must run before ``import
    torch``: the start-up hook calls it in every interpreter of the environment (measurements in
    docs/records/cpu_sharing_2026-12-02/notes.md)."""
    if any(environ.get(name) for name in WAIT_SETTINGS):
        return None
    environ[WAIT_POLICY_ENV] = "PASSIVE"
    return "PASSIVE"


DEVICES = ("cpu", "cuda", "mps")  # what -device takes, as nnUNetv2_train's -device


def check_device(name: str) -> None:
    """Refuse a device this machine does not have, with the fix; changes nothing (commands that start
    others, the benchmark and the demo, call it before they write or plan anything)."""
    import torch

    from nnunet_ssl.errors import SSLUserError

    if name not in DEVICES:  # the commands' choices say so already; a spec built in code may not
        raise SSLUserError(f"-device {name!r} is not one of {', '.join(DEVICES)}.", "pass -device cpu, cuda or mps")
    if name == "cuda" and not torch.cuda.is_available():
        raise SSLUserError("-device cuda was requested but no CUDA GPU is available.", "pass -device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise SSLUserError("-device mps was requested but MPS is not available.", "pass -device cpu")


def select_device(name: str):
    """The torch device; under torchrun (WORLD_SIZE > 1) also joins the process group (NCCL on CUDA,
    gloo on CPU) and picks this process's GPU. On one CPU process: OMP_NUM_THREADS threads when set,
    else one per core."""
    import torch

    check_device(name)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if name == "cuda" else "gloo")
    if name == "cuda" and distributed:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name == "cpu" and not distributed:
        torch.set_num_threads(requested_threads() or os.cpu_count() or 1)
    return torch.device(name)
