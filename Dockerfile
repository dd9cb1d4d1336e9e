# The dashboard as an image: Streamlit on port 8501 serving the Draw, History and Model pages
# and the REST API, with the shipped model inside. Cassandra runs elsewhere (compose.yaml); the
# MNIST_* settings and the password come from the environment at run time, never from here.
#
#   docker build -t mnist-digits .
#   docker compose up -d          (README, "Deployment")
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MNIST_DATA_DIR=/data

WORKDIR /app

# Dependencies first, from the pinned list alone, so this layer is rebuilt only when
# requirements.txt changes. Every pinned package ships a manylinux wheel: no compiler needed.
# No TensorFlow: the app reads the model's LiteRT export (requirements-train.txt is for training).
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# The app's user has a fixed uid, so the ownership of the outbox volume survives rebuilds. The
# code below stays owned by root (the app cannot change it); /data, the outbox, is the app's.
RUN groupadd --gid 10001 mnist \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/mnist --shell /usr/sbin/nologin mnist \
    && mkdir /data \
    && chown mnist:mnist /data
VOLUME ["/data"]

# Only what the app reads at run time; .dockerignore keeps everything else out of the context.
COPY .streamlit/config.toml .streamlit/config.toml
COPY models/mnist_cnn.tflite models/mnist_cnn.card.json models/number_reader.tflite models/number_reader.card.json models/
COPY mnist_core/ mnist_core/
COPY dashboard/ dashboard/
COPY app_pages/ app_pages/
COPY Home.py ./

USER 10001:10001
EXPOSE 8501

# The slim image has no curl; Python's urllib raises (exit 1) on anything but a 2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4)"]

CMD ["streamlit", "run", "Home.py", "--server.port=8501", "--server.address=0.0.0.0"]
