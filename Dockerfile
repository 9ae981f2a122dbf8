# One image for every role: migrate, worker, flower and the simulator differ only by command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY domain ./domain
COPY persistence ./persistence
COPY workers ./workers
RUN pip install --no-cache-dir . && useradd --system --uid 10001 imagegroups
USER imagegroups
CMD ["celery", "-A", "workers", "worker", "-l", "INFO", "--concurrency", "2"]
