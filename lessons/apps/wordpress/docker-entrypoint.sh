#!/bin/bash
# The official wordpress image's entrypoint, in short (docker-library/wordpress's
# docker-entrypoint.sh is the model). The database settings are read from the environment by
# /etc/wordpress/config-default.php on every request; what a container needs once is its own
# keys and salts, made here on its first start (the official image writes them into the
# wp-config.php it makes). A second start of the same container keeps them, so its logins stay
# valid; a new container gets new ones.
#
# Not here: copying WordPress into a volume at /var/www/html (Debian's WordPress lives in
# /usr/share/wordpress, its uploads in /var/lib/wordpress/wp-content, in the container).
set -euo pipefail

SALTS=/etc/wordpress/salts.php

if [ ! -s "$SALTS" ]; then
    {
        echo '<?php'
        echo '// Made by docker-entrypoint.sh on this container'"'"'s first start.'
        echo '$edu_salts = array('
        for key in AUTH_KEY SECURE_AUTH_KEY LOGGED_IN_KEY NONCE_KEY \
                   AUTH_SALT SECURE_AUTH_SALT LOGGED_IN_SALT NONCE_SALT; do
            printf "    '%s' => '%s',\n" "$key" "$(head -c 48 /dev/urandom | base64 -w0)"
        done
        echo ');'
    } >"$SALTS.new"
    chown root:www-data "$SALTS.new"
    chmod 640 "$SALTS.new"
    mv "$SALTS.new" "$SALTS"
fi

if [ "$1" = "apache2-foreground" ]; then
    # The official image's apache2-foreground: Debian's envvars (user, pid and lock files),
    # then apache in the foreground as PID 1, so `edu stop` reaches it.
    # shellcheck disable=SC1091
    set +u  # envvars reads variables it may not be given
    . /etc/apache2/envvars
    set -u
    mkdir -p "$APACHE_RUN_DIR" "$APACHE_LOCK_DIR" "$APACHE_LOG_DIR"
    rm -f "$APACHE_PID_FILE"
    shift
    exec apache2 -DFOREGROUND "$@"
fi
exec "$@"
