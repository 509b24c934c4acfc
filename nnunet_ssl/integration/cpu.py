"""CPU thread count shared by pretraining and fine-tuning."""
import os


def requested_threads() -> int | None:
    """``OMP_NUM_THREADS`` when set to a positive integer, else None.

    ``nnUNetv2_train -device cpu`` sets one thread per core and so ignores it; our trainers and
    ``nnUNetv2_ssl_pretrain`` honour it, so that several CPU jobs can share a machine without
    oversubscribing it (measured here: two 2-thread jobs on 2 cores ran 5x slower each)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None
