"""Neural style transfer on the shared accelerator (issue 6).

- `vgg19`   VGG-19 feature extractor with the Caffe preprocessing, `load_vgg19` (sha256-checked)
- `gatys`   optimisation-based style transfer (Gatys et al.): losses, multi-style, multi-scale, L-BFGS/Adam
- `fast`    feed-forward arbitrary style (Magenta, onnx2torch), any size, style strength
- `color`   colour preservation by luminance transfer
- `judge`   VGG content/style loss scorer for any output
- `jobs`    bounded job queue with worker threads (QueueFull when full)
- `engine`  validation + models + queue + scheduler: what the servicer calls
- `servicer`/`convert`  faceid.v1.StyleTransfer over gRPC

Only `servicer` and `convert` import grpc / generated code.
"""

from faceid.server.style.engine import StyleEngine, StyleLimits, StyleOutput, StyleProgress, StyleRequest
from faceid.server.style.jobs import JobQueue

__all__ = ["JobQueue", "StyleEngine", "StyleLimits", "StyleOutput", "StyleProgress", "StyleRequest"]
