# rankgate: a slim image with the proxy only (no torch, no tests).
#   docker build -t rankgate .
#   docker run -p 8080:8080 -p 9090:9090 -v $PWD/config:/etc/rankgate:ro rankgate
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
# The versions CI tested (make test installs from the same lock).
COPY requirements/lock.txt ./requirements/
COPY proxy ./proxy
COPY plugins ./plugins
COPY models ./models
COPY demo ./demo
RUN pip install --no-cache-dir --prefix=/install -c requirements/lock.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home rankgate
COPY --from=build /install /usr/local
# The committed models, for configs that point at /opt/rankgate/models.
COPY models/*.onnx /opt/rankgate/models/
ENV PYTHONUNBUFFERED=1
# Numeric: Kubernetes' runAsNonRoot can only verify a numeric user (deploy/kubernetes).
USER 10001
EXPOSE 8080 9090
# Mount rankgate.yaml and routes.yaml (e.g. a ConfigMap) at /etc/rankgate; the admin
# listener must bind 0.0.0.0 in the mounted config for /metrics to be scraped.
ENTRYPOINT ["rankgate"]
CMD ["serve", "--config", "/etc/rankgate/rankgate.yaml"]
# Exec form (no shell); an error exits 1, which is "unhealthy".
HEALTHCHECK --interval=10s --timeout=2s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=1)"]
