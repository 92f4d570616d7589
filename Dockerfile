# The detector service, two images from one file (docs/operations.md, "Container"):
#   docker build --target cpu -t voc-detector:cpu .   CPU hosts: no torch, no CUDA; the int8 network
#                                                      through OpenVINO (the numpy runtime)
#   docker build --target gpu -t voc-detector:gpu .   GPU hosts: the CUDA build of torch, which
#                                                      falls back to the CPU without a GPU (the default)
# Both run as the same non-root user with the same settings, health check, drain and command.

# Only the dependency lists of pyproject.toml, so that editing anything else there (dev tools,
# lint settings) leaves the install layers below cached.
FROM python:3.11-slim AS requirements
COPY pyproject.toml /
RUN python -c "import tomllib; p = tomllib.load(open('/pyproject.toml', 'rb'))['project']; \
open('/serving.txt', 'w').write('\n'.join(p['dependencies'])); \
open('/torch.txt', 'w').write('\n'.join(p['optional-dependencies']['torch']))"

# What both images share: the serving dependencies (no torch), the user, the health check, the command.
FROM python:3.11-slim AS serving
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv
COPY --from=requirements /serving.txt ./
RUN pip install -r serving.txt && rm serving.txt \
    && useradd --system --uid 10001 --no-create-home detector
ENV DETECTOR_WEIGHTS=/srv/weights \
    MPLCONFIGDIR=/tmp/matplotlib
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status == 200 else 1)"]
# Exec form: the launcher (python -m app, app/serving/launcher.py) is PID 1 and receives SIGTERM
# itself; the app drains, then exits 0. It runs uvicorn with the guarded httptools protocol
# (app/protocol.py) and a 30 s graceful shutdown; DETECTOR_FRONTS > 0 adds HTTP fronts and one engine.
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]

FROM serving AS cpu
COPY model ./model
COPY app ./app
COPY weights ./weights
# The service must start here without torch: importing it must not reach for it.
RUN python -c "import sys, app.main; sys.exit('torch imported' if 'torch' in sys.modules else 0)"
USER 10001

# Dependencies first, so a code change does not reinstall torch.
FROM serving AS gpu
COPY --from=requirements /torch.txt ./
RUN pip install -r torch.txt && rm torch.txt
COPY model ./model
COPY app ./app
COPY weights ./weights
RUN python -c "import app.main"
USER 10001
