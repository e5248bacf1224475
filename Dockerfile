# The project image used by k8s/ (Ray head and workers, the RayJob submitter, enrolment jobs, the
# enrolment API `enroll serve` and its TF-Serving export watcher):
#   docker build -t ghcr.io/facenet-continual/facenet:0.1.0 .
# The repository is the WORKDIR (configs under experiments/ resolve there); uid/gid 10001 has a
# passwd entry because Ray and TensorFlow look the user up; TensorFlow is the CUDA build so the
# same image serves the GPU worker group (it falls back to the CPU where there is no GPU).
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 TF_USE_LEGACY_KERAS=1 HOME=/tmp
RUN groupadd --gid 10001 ray && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin ray

WORKDIR /app
COPY pyproject.toml README.md ./
COPY trainer trainer
COPY enroll enroll
COPY serving serving
COPY experiments experiments
RUN pip install ".[index,serving,api]" "tensorflow[and-cuda]==2.21.*"

USER 10001:10001
CMD ["python", "-m", "trainer.train", "--help"]
