#!/usr/bin/env bash
# Make sure a MariaDB server answers on 127.0.0.1:3306 with a password-less `sqlarbiter` account for
# local TCP (for the server tests and `databases load-spider`). Installs Debian's package when absent.
# Table names are case-insensitive (lower_case_table_names=1), as in SQLite; file export/import is confined
# to a folder the server cannot use (secure_file_priv) and LOAD DATA LOCAL is off. Idempotent; run as root.
set -uo pipefail
ready() { mariadb-admin --protocol=tcp -h 127.0.0.1 -P 3306 -u sqlarbiter ping >/dev/null 2>&1; }
ready && exit 0
if ! command -v mariadbd >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq mariadb-server >/dev/null || exit 1
fi
cnf=/etc/mysql/mariadb.conf.d/99-sqlarbiter.cnf
if [ ! -f "$cnf" ]; then
  cat > "$cnf" <<'CNF'
[mariadbd]
bind-address = 127.0.0.1
port = 3306
lower_case_table_names = 1
local_infile = 0
secure_file_priv = /var/lib/mysql-files
CNF
fi
mkdir -p /var/lib/mysql-files && chown root:root /var/lib/mysql-files && chmod 700 /var/lib/mysql-files
if ! mariadb-admin ping >/dev/null 2>&1; then
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null || exit 1
  (nohup mysqld_safe >/dev/null 2>&1 &)
  for _ in $(seq 1 30); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 1; done
fi
mariadb -e "CREATE USER IF NOT EXISTS 'sqlarbiter'@'127.0.0.1';
            CREATE USER IF NOT EXISTS 'sqlarbiter'@'localhost';
            GRANT ALL PRIVILEGES ON *.* TO 'sqlarbiter'@'127.0.0.1' WITH GRANT OPTION;
            GRANT ALL PRIVILEGES ON *.* TO 'sqlarbiter'@'localhost' WITH GRANT OPTION;" || exit 1
for _ in $(seq 1 30); do ready && exit 0; sleep 1; done
exit 1
