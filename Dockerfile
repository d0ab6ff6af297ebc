FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tracehub ./tracehub
RUN pip install --no-cache-dir .
ENV TRACEHUB_HOST=0.0.0.0
EXPOSE 3001
CMD ["tracehub", "serve"]
