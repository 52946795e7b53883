"""Small knn calls covering every CUDA path, for compute-sanitizer (memcheck, racecheck,
initcheck, synccheck) in benchmarks/gpu_session.sh. Exits non-zero on a wrong answer."""
import numpy as np
import torch

import hdlfast

rng = np.random.default_rng(0)
for n, d, k, dtype in [(70, 9, 5, torch.float32), (300, 64, 33, torch.bfloat16),
                       (257, 17, 200, torch.float16), (129, 31, 128, torch.float32)]:
    x = rng.standard_normal((n, d)).astype(np.float32)
    xg = torch.from_numpy(x).to(dtype).cuda()
    sims, idx = hdlfast.knn(xg, k)
    ref_s, ref_i = hdlfast.knn(xg.float().cpu(), k, backend="native")
    err = float(np.abs(sims.cpu().numpy() - ref_s.numpy()).max())
    print(n, d, k, dtype, "max |sim - cpu|", err)
    assert err < (1e-5 if dtype == torch.float32 else 3e-3), err
