# The detector service. One image for GPU and CPU hosts: the CUDA build of torch uses the GPU
# when the container is given one (see docker-compose.yml) and the CPU otherwise.
# Only the runtime dependency list of pyproject.toml, so that editing anything else there (dev
# tools, lint settings) leaves the torch layer below cached.
FROM python:3.11-slim AS requirements
COPY pyproject.toml /
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/pyproject.toml','rb'))['project']['dependencies']))" \
        > /requirements.txt

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv

# Dependencies first, so a code change does not reinstall torch.
COPY --from=requirements /requirements.txt ./
RUN pip install -r requirements.txt && rm requirements.txt

COPY model ./model
COPY app ./app
COPY weights ./weights
RUN useradd --system --uid 10001 --no-create-home detector \
    && python -c "import app.main"

USER 10001
ENV DETECTOR_WEIGHTS=/srv/weights \
    MPLCONFIGDIR=/tmp/matplotlib
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status == 200 else 1)"]

# Exec form: uvicorn is PID 1 and receives SIGTERM itself; the app drains, then exits 0.
# --http: uvicorn's httptools protocol with header timeouts and size limits (app/protocol.py).
CMD ["uvicorn", "app.main:app", "--http", "app.protocol:GuardedHttpTools", "--host", "0.0.0.0", "--port", "8000", \
     "--timeout-graceful-shutdown", "30"]
