# MedScan service image: runtime dependencies, the app and the shipped models; no tests, training or data.
# Build: docker build -t medscan .   Run: docker run -p 8000:8000 medscan

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# binutils only to strip debug symbols from TensorFlow's libraries (about 200 MB); not in the final image.
RUN apt-get update && apt-get install -y --no-install-recommends binutils && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, in their own layer, so code changes do not reinstall TensorFlow.
COPY pyproject.toml README.md ./
# libclang and TensorFlow's C++ headers serve building TensorFlow, not running a SavedModel.
RUN mkdir app && touch app/__init__.py \
    && pip install . && pip uninstall -y medscan libclang \
    && rm -rf /opt/venv/lib/python3.11/site-packages/tensorflow/include \
    && find /opt/venv/lib/python3.11/site-packages/tensorflow -name '*.so*' -type f -exec strip --strip-unneeded {} + \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +
COPY app/ app/
RUN pip install --no-deps . && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM python:3.11-slim
# Metadata first and the big copies last: each later step would otherwise copy them again, and the
# models, which change most often, form the last layer.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    MEDSCAN_MODELS_DIR=/srv/medscan/models \
    MEDSCAN_HOST=0.0.0.0 \
    MEDSCAN_PORT=8000 \
    MEDSCAN_RESULTS_OUTBOX_DIR=/srv/medscan/outbox
# The outbox holds DICOM SRs until the PACS takes them (docs/pacs.md): mount a volume there to keep them.
RUN useradd --system --uid 10001 --user-group --no-create-home medscan \
    && mkdir -p /srv/medscan/outbox && chown medscan:medscan /srv/medscan/outbox
WORKDIR /srv/medscan
# 8000: HTTP; 11112: the C-STORE SCP, when MEDSCAN_DICOM_PORT=11112
EXPOSE 8000 11112
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('MEDSCAN_PORT', '8000'), timeout=2)"]
CMD ["medscan", "serve"]
USER 10001:10001
COPY --from=build /opt/venv /opt/venv
COPY models/ /srv/medscan/models/
