"""Training-length variants in nnU-Net's idiom (``-tr SSLInitTrainer_cpu1200it``).

CPU lengths are for demos, tests and CPU benchmarks with the ``nnUNetPlans_cpu`` plans; each pair
(SSLInit / SSLScratch) shares one schedule so comparisons isolate the initialisation.
"""
from nnunet_ssl.integration.trainers.finetune import (FINETUNE_VARIANTS, SSLInitTrainer, SSLScratchTrainer,
                                                     variant_suffix)


class _Cpu1200it:  # 48 x 25 = 1200 iterations, 2 warm-up epochs (about 4%, nnssl uses 5%)
    NUM_EPOCHS, ITERATIONS_PER_EPOCH, VAL_ITERATIONS_PER_EPOCH, WARMUP_EPOCHS = 48, 25, 2, 2


class _CpuDemo:  # 40 x 25 = 1000 iterations; no test-time mirroring: the demo's budget on 2 CPU cores
    NUM_EPOCHS, ITERATIONS_PER_EPOCH, VAL_ITERATIONS_PER_EPOCH, WARMUP_EPOCHS = 40, 25, 1, 2
    TEST_TIME_MIRRORING = False


class _Cpu500it:  # 20 x 25 = 500 iterations, 1 warm-up epoch (5%); no test-time mirroring: the CPU evidence
    # matrices (docs/benchmarks), where 50 cells of cpuDemo would not fit a working day on 2 cores
    NUM_EPOCHS, ITERATIONS_PER_EPOCH, VAL_ITERATIONS_PER_EPOCH, WARMUP_EPOCHS = 20, 25, 1, 1
    TEST_TIME_MIRRORING = False


class _Cpu2000it:  # 80 x 25 = 2000 iterations, 4 warm-up epochs (5%), no test-time mirroring: the 2d CPU matrix,
    # where a step costs about a fifth of a 3d one and 500 iterations of 4 slices left every model near Dice 0
    NUM_EPOCHS, ITERATIONS_PER_EPOCH, VAL_ITERATIONS_PER_EPOCH, WARMUP_EPOCHS = 80, 25, 1, 4
    TEST_TIME_MIRRORING = False


class _Tiny:  # smoke tests only
    NUM_EPOCHS, ITERATIONS_PER_EPOCH, VAL_ITERATIONS_PER_EPOCH, WARMUP_EPOCHS = 2, 2, 1, 1
    TEST_TIME_MIRRORING = False


class SSLInitTrainer_cpu1200it(_Cpu1200it, SSLInitTrainer): pass  # noqa: E701
class SSLScratchTrainer_cpu1200it(_Cpu1200it, SSLScratchTrainer): pass  # noqa: E701
class SSLInitTrainer_cpuDemo(_CpuDemo, SSLInitTrainer): pass  # noqa: E701
class SSLScratchTrainer_cpuDemo(_CpuDemo, SSLScratchTrainer): pass  # noqa: E701
class SSLInitTrainer_cpu500it(_Cpu500it, SSLInitTrainer): pass  # noqa: E701
class SSLScratchTrainer_cpu500it(_Cpu500it, SSLScratchTrainer): pass  # noqa: E701
class SSLInitTrainer_cpu2000it(_Cpu2000it, SSLInitTrainer): pass  # noqa: E701
class SSLScratchTrainer_cpu2000it(_Cpu2000it, SSLScratchTrainer): pass  # noqa: E701
class SSLInitTrainer_tiny(_Tiny, SSLInitTrainer): pass  # noqa: E701
class SSLScratchTrainer_tiny(_Tiny, SSLScratchTrainer): pass  # noqa: E701


def _generated_variants() -> dict[str, type]:
    """Every fine-tuning recipe (finetune.FINETUNE_VARIANTS) at every length, unpinned
    (``SSLInitTrainer_lowEncoderLR_cpu500it``; the explicit classes above cover the default recipe)
    and pinned to one pretraining method (``SSLInitTrainer_pcl[_lowEncoderLR][_cpu500it]``), so that
    runs from different pretrainings or recipes land in different nnU-Net model folders (the
    benchmark relies on it) and nothing has to be chosen through nnUNet_ssl_method."""
    from nnunet_ssl.methods import list_methods
    lengths = {"": (), "_cpu1200it": (_Cpu1200it,), "_cpuDemo": (_CpuDemo,), "_cpu500it": (_Cpu500it,),
               "_cpu2000it": (_Cpu2000it,), "_tiny": (_Tiny,)}
    variants = {}
    for finetune, base in FINETUNE_VARIANTS.items():
        for method in [None, *list_methods()]:
            for suffix, mixins in lengths.items():
                name = f"SSLInitTrainer{f'_{method}' if method else ''}{variant_suffix(finetune)}{suffix}"
                if name in globals() or name == base.__name__:
                    continue
                source = f"the {method} pretraining" if method else "the pretrained encoder"
                variants[name] = type(name, (*mixins, base),
                                      {"PRETRAINING_METHOD": method, "__module__": __name__,
                                       "__doc__": f"{base.__name__}{suffix} loading {source}."})
    return variants


globals().update(_generated_variants())
