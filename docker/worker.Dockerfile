# The isotune worker image: on PyTorch's CUDA runtime image, so the CUDA build of torch is already
# there and pip keeps it (the `worker` extra asks for torch>=2.3 without choosing a build).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /app
COPY pyproject.toml README.md ./
COPY contract contract
COPY meanfield meanfield
COPY service service
COPY migrations migrations
COPY workers workers
COPY cli cli
RUN pip install --no-cache-dir '.[worker]'
CMD ["isotune", "worker", "--help"]
