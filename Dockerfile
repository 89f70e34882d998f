# syntax=docker/dockerfile:1
#
# One image for every Ketanmu process: the four services, the partner sandbox and the topic tool.
# deploy/docker-compose.yml picks the process with `command`, e.g.
#   python -m services.intake | services.printing | services.courier | services.notify
#   python -m sandbox
#   python -m shared.kafka.admin create-topics --bootstrap kafka:9092 --partitions 6
#
# Build from the repository root:  docker build -t ketanmu-app .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build: wheels of the pinned deps
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
# Only pyproject.toml: this layer (the slow one) is rebuilt when the dependencies change, not on
# every code change. The dependency list is read from [project].dependencies, so it is never
# repeated in a requirements file that could drift.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('requirements.txt', 'w').write(chr(10).join(deps) + chr(10))" \
 && pip wheel --wheel-dir /wheels --requirement requirements.txt \
 && cp requirements.txt /wheels/requirements.txt

# ---------------------------------------------------------------- runtime: slim, no compilers
FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app

RUN groupadd --system --gid 10001 ketanmu \
 && useradd --system --uid 10001 --gid ketanmu --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin ketanmu

# The wheels are bind-mounted from the build stage, so they never become a layer of this image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && pip install --no-index --find-links=/wheels --requirement /wheels/requirements.txt

WORKDIR /app
# The code runs from source (PYTHONPATH=/app) rather than from a built wheel: the services apply
# their SQL migrations from services/*/migrations and shared/db/migrations, and a wheel carries only
# what the package-data config lists. Running the tree keeps every data file next to its code.
COPY shared ./shared
COPY services ./services
COPY sandbox ./sandbox
COPY pyproject.toml ./

# Fail the build, not the first start, when a dependency or a migration is missing.
# Byte-code is compiled once here (PYTHONDONTWRITEBYTECODE stops runtime writes, not reads).
RUN python -c "import shared.kafka.admin, sandbox.app, services.intake.app, services.printing.app, services.courier.app, services.notify.app" \
 && ls shared/db/migrations/*.sql services/*/migrations/*.sql >/dev/null \
 && python -m compileall -q shared services sandbox

USER 10001:10001

# intake, printing, courier, notify, sandbox
EXPOSE 8001 8002 8003 8004 8090

# No default process: say how to pick one. Health checks are set per service in docker-compose.yml.
CMD ["python", "-c", "print('Ketanmu image: run one of\\n  python -m services.intake|services.printing|services.courier|services.notify\\n  python -m sandbox\\n  python -m shared.kafka.admin create-topics --bootstrap kafka:9092 --partitions 6')"]
