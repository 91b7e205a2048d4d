# The greeter, code first: any change to app.py installs the dependencies again.
FROM python
WORKDIR /app
COPY . .
RUN python3 wheels/pip-23.0.1-py3-none-any.whl/pip install -r requirements.txt \
    --no-index --find-links wheels --break-system-packages --root-user-action=ignore
ENV GREETING=Hello
CMD ["python3", "app.py"]
