# ConvScope on the CPU build of torch, serving on port 8000.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    CONVSCOPE_HOST=0.0.0.0 CONVSCOPE_PORT=8000 CONVSCOPE_DATA_DIR=/data CONVSCOPE_MODELS_DIR=/app/models

WORKDIR /app
# The CPU wheels of torch are a fraction of the CUDA ones.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.4,<3" "torchvision>=0.19"
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install .
COPY templates ./templates
COPY static ./static
COPY models ./models

RUN useradd --create-home convscope && mkdir -p /data && chown convscope /data
USER convscope
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/health')"
CMD ["convscope", "serve"]
