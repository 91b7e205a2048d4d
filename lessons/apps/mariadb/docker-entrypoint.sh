#!/bin/bash
# The official mariadb image's entrypoint, in short (docker-library/mariadb's
# docker-entrypoint.sh is the model; what it does that this does not is said below).
#
# The first start of a container whose data directory is empty sets the database up from
# the environment, as `docker run -e ...` gives it:
#   MARIADB_ROOT_PASSWORD        root's password (or MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1,
#                                or MARIADB_RANDOM_ROOT_PASSWORD=1: printed once, in the log)
#   MARIADB_DATABASE             a database to create
#   MARIADB_USER, MARIADB_PASSWORD  a user with every right on that database
# Each may be given by its older MYSQL_ name, or as NAME_FILE (a file holding the value,
# for secrets). Later starts find the database in the data directory (a volume) and use it
# as it is: the variables are read only once, as in the official image.
#
# Not here: scripts in /docker-entrypoint-initdb.d, MARIADB_ROOT_HOST (root may log in
# from any host, the official default), time zone tables, and upgrades of an older data
# directory (MARIADB_AUTO_UPGRADE).
set -euo pipefail

DATADIR=/var/lib/mysql

note() { echo "$(date -u '+%F %T') 0 [Note] [Entrypoint]: $*"; }
fail() { echo "$(date -u '+%F %T') 0 [ERROR] [Entrypoint]: $*" >&2; exit 1; }

# `docker run mariadb --option`: options for the server.
if [ "${1:0:1}" = "-" ]; then
    set -- mariadbd "$@"
fi
# Anything else than the server (bash, mariadb, ...) just runs.
if [ "$1" != "mariadbd" ] && [ "$1" != "mysqld" ]; then
    exec "$@"
fi

# The value of MARIADB_X: from MARIADB_X, MYSQL_X, or the file MARIADB_X_FILE/MYSQL_X_FILE.
setting() {
    local name
    for name in "MARIADB_$1" "MYSQL_$1"; do
        if [ -n "${!name:-}" ]; then
            printf '%s' "${!name}"
            return
        fi
        local file="${name}_FILE"
        if [ -n "${!file:-}" ]; then
            cat "${!file}"
            return
        fi
    done
}

# Quoting for SQL: a string literal, and an identifier.
literal() { local s=${1//\\/\\\\}; printf "'%s'" "${s//\'/\\\'}"; }
ident() { printf '`%s`' "${1//\`/\`\`}"; }

setup() {
    local root_password database user password allow_empty random_root
    root_password=$(setting ROOT_PASSWORD)
    allow_empty=$(setting ALLOW_EMPTY_ROOT_PASSWORD)
    random_root=$(setting RANDOM_ROOT_PASSWORD)
    database=$(setting DATABASE)
    user=$(setting USER)
    password=$(setting PASSWORD)
    if [ -z "$root_password" ] && [ -z "$allow_empty" ] && [ -z "$random_root" ]; then
        fail "Database is uninitialized and password option is not specified.
    You need to specify one of MARIADB_ROOT_PASSWORD, MARIADB_ALLOW_EMPTY_ROOT_PASSWORD and MARIADB_RANDOM_ROOT_PASSWORD"
    fi
    if [ -n "$user" ] && [ -z "$password" ]; then
        fail "MARIADB_USER=$user needs a MARIADB_PASSWORD too"
    fi
    if [ "$user" = "root" ]; then
        fail "MARIADB_USER=root: root is made already; MARIADB_ROOT_PASSWORD sets its password"
    fi
    if [ -n "$random_root" ] && [ -z "$root_password" ]; then
        root_password=$(head -c 18 /dev/urandom | base64)
        note "GENERATED ROOT PASSWORD: $root_password"
    fi

    note "Initializing database files"
    # A volume's root may be root's (a bind mount, a fresh volume): the server runs as mysql.
    chown mysql:mysql "$DATADIR"
    mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
        --auth-root-authentication-method=normal --skip-name-resolve \
        --skip-log-bin >/dev/null
    note "Database files initialized"

    # A password only the healthcheck knows, kept beside the data (as the official image's
    # .my-healthcheck.cnf): healthcheck.sh logs in with it over TCP.
    local check_password
    check_password=$(head -c 18 /dev/urandom | base64)
    printf '[mariadb-client]\nport=3306\nuser=healthcheck\npassword=%s\n' "$check_password" \
        >"$DATADIR/.my-healthcheck.cnf"
    chown mysql:mysql "$DATADIR/.my-healthcheck.cnf"
    chmod 600 "$DATADIR/.my-healthcheck.cnf"

    local sql
    sql="FLUSH PRIVILEGES;
DROP USER IF EXISTS ''@'localhost', 'root'@'127.0.0.1', 'root'@'::1';
EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS \\'\\'@\\'', @@hostname, '\\'');
EXECUTE IMMEDIATE CONCAT('DROP USER IF EXISTS \\'root\\'@\\'', @@hostname, '\\'');
ALTER USER 'root'@'localhost' IDENTIFIED BY $(literal "$root_password");
CREATE USER 'root'@'%' IDENTIFIED BY $(literal "$root_password");
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
CREATE USER 'healthcheck'@'127.0.0.1' IDENTIFIED BY $(literal "$check_password");
CREATE USER 'healthcheck'@'::1' IDENTIFIED BY $(literal "$check_password");
CREATE USER 'healthcheck'@'localhost' IDENTIFIED BY $(literal "$check_password");"
    if [ -n "$database" ]; then
        note "Creating database $database"
        sql+="
CREATE DATABASE IF NOT EXISTS $(ident "$database");"
    fi
    if [ -n "$user" ]; then
        note "Creating user $user"
        sql+="
CREATE USER $(literal "$user")@'%' IDENTIFIED BY $(literal "$password");"
        if [ -n "$database" ]; then
            note "Giving user $user access to schema $database"
            sql+="
GRANT ALL ON $(ident "$database").* TO $(literal "$user")@'%';"
        fi
    fi
    # The official image starts a temporary server with no network and sends it this SQL;
    # bootstrap mode (what mariadb-install-db uses) runs it without a server, in a second.
    mariadbd --user=mysql --datadir="$DATADIR" --bootstrap --skip-networking \
        --skip-log-bin <<<"$sql"
    note "MariaDB init process done. Ready for start up."
}

if [ -d "$DATADIR/mysql" ]; then
    note "Found a database in $DATADIR: using it (the set-up variables are not read again)"
else
    setup
fi

# The server runs as mysql, not root (the official image uses gosu; setpriv is the same
# idea, and Debian has it).
note "Starting $*"
exec setpriv --reuid=mysql --regid=mysql --init-groups "$@"
