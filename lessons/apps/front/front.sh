#!/bin/sh
# The front: nginx spreading requests over the replicas named in BACKENDS, round robin.
#   edu run -d --network NET -p 127.0.0.1:PORT:80 -e BACKENDS="app-1:8000 app-2:8000" front
# nginx looks the names up once, when it starts (in /etc/hosts, which edu writes), so a
# front is started after its replicas, and again when the list changes.
set -eu
: "${BACKENDS:?BACKENDS must name the replicas, e.g. BACKENDS='app-1:8000 app-2:8000'}"

servers=""
for backend in $BACKENDS; do
    # One failed try takes a replica out for 3 s; then nginx tries it again.
    servers="$servers        server $backend max_fails=1 fail_timeout=3s;
"
done

cat >/etc/nginx/nginx.conf <<CONF
worker_processes auto;
error_log stderr warn;
pid /run/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    upstream app {
        # Shared memory: the workers share one round robin, and one list of failed replicas.
        zone app 64k;
$servers    }
    server {
        listen 80;
        location / {
            proxy_pass http://app;
            # A replica that is gone does not answer at all (its address has left the
            # network): give up on it after 300 ms, and try the next one.
            proxy_connect_timeout 300ms;
            proxy_next_upstream error timeout;
            proxy_read_timeout 10s;
            add_header X-Upstream \$upstream_addr always;
        }
    }
}
CONF
echo "front: round robin over $BACKENDS"
exec nginx -g 'daemon off;'
