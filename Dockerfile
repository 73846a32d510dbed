# rankgate: a slim image with the proxy only (no torch, no tests).
#   docker build -t rankgate .
#   docker run -p 8080:8080 -p 9090:9090 -v $PWD/config:/etc/rankgate:ro rankgate
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
COPY plugins ./plugins
COPY models ./models
COPY demo ./demo
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home rankgate
COPY --from=build /install /usr/local
# The committed models, for configs that point at /opt/rankgate/models.
COPY models/*.onnx /opt/rankgate/models/
ENV PYTHONUNBUFFERED=1
USER rankgate
EXPOSE 8080 9090
# Mount rankgate.yaml and routes.yaml (e.g. a ConfigMap) at /etc/rankgate; the admin
# listener must bind 0.0.0.0 in the mounted config for /metrics to be scraped.
ENTRYPOINT ["rankgate"]
CMD ["serve", "--config", "/etc/rankgate/rankgate.yaml"]
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=1)" || exit 1
