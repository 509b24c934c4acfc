"""Issue 14 item 5b (docs/records/cpu_sharing_2026-12-02/notes.md): time training steps of the hippocampus CPU-plans 3d network (the compute of a
PCL pretraining / nnU-Net fine-tuning step) under the thread settings given in the environment."""
import os, sys, time, json, statistics
t_start = time.time()
import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

threads = int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count())
torch.set_num_threads(threads)
torch.set_flush_denormal(True)
torch.manual_seed(0)
pm = PlansManager(os.path.join(os.environ.get("nnUNet_preprocessed", "/work/hippo/pre"), "Dataset501_Hippocampus",
                               "nnUNetPlans_cpu.json"))
cfg = pm.get_configuration("3d_fullres")
net = nnUNetTrainer.build_network_architecture(pm, cfg, 1, 3, enable_deep_supervision=False)
opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
x = torch.randn(8, 1, 16, 48, 32)  # PCL: batch 4 x 2 views of its 16x48x32 patch
y = torch.randint(0, 3, (8, 16, 48, 32))
steps, warmup = int(sys.argv[1]), 3
times = []
for i in range(warmup + steps):
    t = time.perf_counter()
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    if i >= warmup:
        times.append(time.perf_counter() - t)
print(json.dumps({"threads": threads, "wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
                  "steps": steps, "median_s": round(statistics.median(times), 3),
                  "mean_s": round(statistics.mean(times), 3), "max_s": round(max(times), 3),
                  "wall_s": round(time.time() - t_start, 1)}))
