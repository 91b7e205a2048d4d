#!/bin/sh
# Healthy when the server takes a login over TCP and answers a query: the first start's
# set-up runs with no network, so before it ends this fails, as a client would.
exec mariadb --defaults-extra-file=/var/lib/mysql/.my-healthcheck.cnf --protocol=tcp \
    --host=127.0.0.1 --connect-timeout=2 --batch --skip-column-names -e 'SELECT 1' >/dev/null
