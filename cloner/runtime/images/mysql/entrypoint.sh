#!/usr/bin/env bash
# Entrypoint of cloner's offline-built MariaDB 10.11 image.
#
# It honours the environment contract of the official `mariadb` image (and
# the MYSQL_* names the official `mysql` image uses):
#   MARIADB_ROOT_PASSWORD / MYSQL_ROOT_PASSWORD     root password (one of these,
#       MARIADB_ALLOW_EMPTY_ROOT_PASSWORD / MYSQL_ALLOW_EMPTY_PASSWORD or
#       MARIADB_RANDOM_ROOT_PASSWORD / MYSQL_RANDOM_ROOT_PASSWORD is required)
#   MARIADB_ROOT_HOST / MYSQL_ROOT_HOST             host of the remote root account (default %)
#   MARIADB_DATABASE / MYSQL_DATABASE               database created at initialisation
#   MARIADB_USER / MYSQL_USER, MARIADB_PASSWORD / MYSQL_PASSWORD
#                                                   user with all privileges on that database
#   /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz|*.sql.xz|*.sql.zst
# Each may also come from a file named by the same variable with a _FILE
# suffix (Docker secrets). MARIADB_INITDB_SKIP_TZINFO is accepted; this image
# never loads time zone tables (it has no zoneinfo), so it changes nothing.
#
# The data directory is initialised only when it holds no `mysql` system
# schema. Tenant containers run with a read-only root filesystem, as uid 999,
# with no capabilities and no-new-privileges, and with tmpfs on /tmp and
# /run/mysqld: when not root, this script writes only below the data
# directory, /tmp and /run/mysqld.
#
# Initialisation is on the critical path of provisioning, so it does no more
# than needed: the system tables are created by one `mariadbd --bootstrap`
# run that also sets the root password (no temporary server, no password in
# a file: the SQL goes through a pipe), and the help tables and the sys schema,
# which a tenant database never uses, are left out. A temporary server is
# started only when there are init scripts.
set -Eeo pipefail

readonly MY_UID=999
readonly MY_GID=999
readonly DATADIR=/var/lib/mysql
readonly RUNDIR=/run/mysqld
readonly SHARE=/usr/share/mysql
readonly INITDB_DIR=/docker-entrypoint-initdb.d

log() {
	printf '%(%Y-%m-%d %H:%M:%S)T [entrypoint] %s\n' -1 "$*" >&2
}

die() {
	log "error: $*"
	exit 1
}

# file_env VAR [DEFAULT]: export VAR from VAR or from the file named by VAR_FILE.
file_env() {
	local var=$1 file_var="${1}_FILE" default=${2:-}
	if [[ -n ${!var:-} && -n ${!file_var:-} ]]; then
		die "both $var and $file_var are set, but they are exclusive"
	fi
	local value=$default
	if [[ -n ${!var:-} ]]; then
		value=${!var}
	elif [[ -n ${!file_var:-} ]]; then
		[[ -r ${!file_var} ]] || die "$file_var=${!file_var} is not a readable file"
		value=$(<"${!file_var}")
	fi
	export "$var=$value"
	unset "$file_var"
}

# mariadb_env NAME [DEFAULT]: MARIADB_NAME, falling back to MYSQL_NAME (both
# with their _FILE variants), exported as MARIADB_NAME.
mariadb_env() {
	local name=$1 default=${2:-}
	local mysql_var="MYSQL_$name"
	file_env "$mysql_var"
	file_env "MARIADB_$name" "${!mysql_var:-$default}"
	unset "$mysql_var"
}

wants_help() {
	local arg
	for arg; do
		case $arg in
			-'?' | --help | --print-defaults | -V | --version) return 0 ;;
		esac
	done
	return 1
}

setup_env() {
	mariadb_env ROOT_PASSWORD
	# The mysql image spells this one differently.
	: "${MYSQL_ALLOW_EMPTY_ROOT_PASSWORD:=${MYSQL_ALLOW_EMPTY_PASSWORD:-}}"
	unset MYSQL_ALLOW_EMPTY_PASSWORD
	mariadb_env ALLOW_EMPTY_ROOT_PASSWORD
	mariadb_env RANDOM_ROOT_PASSWORD
	mariadb_env ROOT_HOST %
	mariadb_env DATABASE
	mariadb_env USER
	mariadb_env PASSWORD
	mariadb_env INITDB_SKIP_TZINFO
}

# The server options given on the command line, minus the program name: the
# bootstrap and the temporary server get the same InnoDB sizing as the real one.
server_options() {
	local arg
	for arg in "${@:2}"; do
		[[ $arg == -* ]] && printf '%s\0' "$arg"
	done
}

# Started as root (allowed by the official contract): make the directories
# ours, then re-execute this script as uid 999. Needs CAP_CHOWN/CAP_SETUID,
# which the hardened tenant containers do not have; they start as 999.
become_mysql() {
	mkdir -p "$DATADIR" "$RUNDIR"
	if [[ $(stat -c %u:%g "$DATADIR") != "$MY_UID:$MY_GID" ]]; then
		chown -R "$MY_UID:$MY_GID" "$DATADIR" || die "cannot chown $DATADIR to $MY_UID:$MY_GID"
	fi
	chown "$MY_UID:$MY_GID" "$RUNDIR" || die "cannot chown $RUNDIR"
	chmod 0755 "$RUNDIR" || die "cannot chmod $RUNDIR"
	exec setpriv --reuid="$MY_UID" --regid="$MY_GID" --init-groups -- "${BASH_SOURCE[0]}" "$@"
}

# sql_string VALUE: VALUE as a single-quoted SQL literal (backslash escapes on,
# the server default, so both the backslash and the quote are escaped).
sql_string() {
	local value=${1//\\/\\\\}
	printf "'%s'" "${value//\'/\\\'}"
}

sql_ident() {
	printf '`%s`' "${1//\`/\`\`}"
}

# A database name as the pattern mysql.db stores for a database-level grant:
# `_` and `%` are wildcards there, so `a_b` would also match `aXb`.
db_pattern() {
	local value=${1//\\/\\\\}
	value=${value//_/\\_}
	printf '%s' "${value//%/\\%}"
}

# The SQL that follows the system tables in the bootstrap run: root accounts,
# the optional database and user. Written to stdout, i.e. into the pipe. The
# bootstrap run has no privilege system (CREATE USER and GRANT refuse to
# run), so this edits the grant tables directly, the way the server's own
# mysql_system_tables_data.sql creates root: JSON in mysql.global_priv,
# one row per database grant in mysql.db.
accounts_sql() {
	local root_pw=$1 auth
	auth="JSON_OBJECT('plugin', 'mysql_native_password', 'authentication_string', PASSWORD($(sql_string "$root_pw")), 'password_last_changed', UNIX_TIMESTAMP())"
	cat <<-'EOF'
		-- cloner entrypoint: accounts
		SET SESSION sql_mode = '';
		-- root@<hostname>, root@127.0.0.1 and root@::1 come without a password.
		DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost';
		DELETE FROM mysql.proxies_priv WHERE User = 'root' AND Host <> 'localhost';
	EOF
	printf "UPDATE mysql.global_priv SET Priv = JSON_MERGE_PATCH(Priv, %s) WHERE User = 'root';\n" "$auth"
	if [[ $MARIADB_ROOT_HOST != localhost ]]; then
		local host
		host=$(sql_string "$MARIADB_ROOT_HOST")
		printf "INSERT INTO mysql.global_priv (Host, User, Priv) SELECT %s, User, Priv FROM mysql.global_priv WHERE User = 'root' AND Host = 'localhost';\n" "$host"
		printf "INSERT INTO mysql.proxies_priv VALUES (%s, 'root', '', '', 1, '', NOW());\n" "$host"
	fi
	if [[ -n $MARIADB_DATABASE ]]; then
		printf 'CREATE DATABASE IF NOT EXISTS %s;\n' "$(sql_ident "$MARIADB_DATABASE")"
	fi
	if [[ -n $MARIADB_USER ]]; then
		local user
		user=$(sql_string "$MARIADB_USER")
		auth="JSON_OBJECT('access', 0, 'plugin', 'mysql_native_password', 'authentication_string', PASSWORD($(sql_string "$MARIADB_PASSWORD")), 'password_last_changed', UNIX_TIMESTAMP())"
		printf "INSERT INTO mysql.global_priv (Host, User, Priv) VALUES ('%%', %s, %s);\n" "$user" "$auth"
		if [[ -n $MARIADB_DATABASE ]]; then
			# ALL on the database: every *_priv column but Grant_priv.
			printf "INSERT INTO mysql.db (Host, Db, User) VALUES ('%%', %s, %s);\n" \
				"$(sql_string "$(db_pattern "$MARIADB_DATABASE")")" "$user"
			cat <<-'EOF'
				SELECT GROUP_CONCAT(CONCAT(COLUMN_NAME, ' = ''Y''')) INTO @all_db_privs
				  FROM information_schema.COLUMNS
				 WHERE TABLE_SCHEMA = 'mysql' AND TABLE_NAME = 'db'
				   AND COLUMN_NAME LIKE '%\_priv' AND COLUMN_NAME <> 'Grant_priv';
			EOF
			printf "EXECUTE IMMEDIATE CONCAT('UPDATE mysql.db SET ', @all_db_privs, ' WHERE Host = ''%%'' AND User = ', QUOTE(%s));\n" "$user"
		fi
	fi
}

init_datadir() {
	local root_pw=$MARIADB_ROOT_PASSWORD
	if [[ -z $root_pw ]]; then
		if [[ -n $MARIADB_RANDOM_ROOT_PASSWORD ]]; then
			root_pw=$(head -c 24 /dev/urandom | base64 | tr -d '\n/+=')
			log "GENERATED ROOT PASSWORD: $root_pw"
		elif [[ -z $MARIADB_ALLOW_EMPTY_ROOT_PASSWORD ]]; then
			die "the data directory is uninitialised and no root password was given:" \
				"set MARIADB_ROOT_PASSWORD (or MYSQL_ROOT_PASSWORD, or a _FILE variant)," \
				"MARIADB_ALLOW_EMPTY_ROOT_PASSWORD=1 or MARIADB_RANDOM_ROOT_PASSWORD=1"
		fi
	fi
	if [[ -n $MARIADB_USER && -z $MARIADB_PASSWORD ]]; then
		die "MARIADB_USER is set but MARIADB_PASSWORD is not"
	fi
	[[ $MARIADB_USER != root ]] || die "MARIADB_USER=root: root is set up by MARIADB_ROOT_PASSWORD"

	local file
	for file in mysql_system_tables.sql mysql_performance_tables.sql \
		mysql_system_tables_data.sql maria_add_gis_sp_bootstrap.sql; do
		[[ -f $SHARE/$file ]] || die "$SHARE/$file is missing from the image"
	done

	local -a options=()
	mapfile -d '' -t options < <(server_options "$@")
	log "initialising a new data directory in $DATADIR"
	mkdir -p "$DATADIR"
	# The same statements mariadb-install-db feeds its bootstrap run, minus the
	# help tables, the sys schema and the test database, plus the accounts.
	# --innodb-flush-log-at-trx-commit=0 and --innodb-doublewrite=0: the
	# bootstrap run ends with a clean shutdown, which makes everything durable
	# once instead of after every statement.
	{
		printf 'CREATE DATABASE IF NOT EXISTS mysql;\nUSE mysql;\nSET @auth_root_socket=NULL;\n'
		cat "$SHARE/mysql_system_tables.sql" "$SHARE/mysql_performance_tables.sql" \
			"$SHARE/mysql_system_tables_data.sql" "$SHARE/maria_add_gis_sp_bootstrap.sql"
		accounts_sql "$root_pw"
	} | mariadbd --bootstrap --datadir="$DATADIR" --log-warnings=0 \
		--enforce-storage-engine='' --skip-log-bin --innodb-doublewrite=0 \
		--innodb-flush-log-at-trx-commit=0 --max-allowed-packet=8M \
		--net-buffer-length=16K "${options[@]}" ||
		die "the bootstrap run failed; its messages are above"
	# What mariadb-install-db leaves behind, so mariadb-upgrade knows the version.
	mariadbd --version | sed -E 's/.*Ver ([0-9.]+-MariaDB).*/\1/' | tr -d '\n' >"$DATADIR/mysql_upgrade_info"
	run_init_scripts "$root_pw" "${options[@]}"
	log "initialisation complete"
}

run_init_scripts() {
	local root_pw=$1
	shift
	local -a files=()
	shopt -s nullglob
	files=("$INITDB_DIR"/*)
	shopt -u nullglob
	if ((${#files[@]} == 0)); then
		return 0
	fi

	# A private socket and no TCP: nobody sees a server about to be stopped again.
	local socket=$RUNDIR/init.sock pid
	log "starting a temporary server for $INITDB_DIR"
	mariadbd --datadir="$DATADIR" --skip-networking --socket="$socket" --skip-log-bin \
		--pid-file="$RUNDIR/init.pid" "$@" &
	pid=$!
	local -a client=(mariadb --no-defaults --protocol=socket --socket="$socket" --user=root)
	local i
	for i in {1..300}; do
		if MYSQL_PWD=$root_pw "${client[@]}" -e 'SELECT 1' >/dev/null 2>&1; then
			break
		fi
		kill -0 "$pid" 2>/dev/null || die "the temporary server exited during start-up"
		((i < 300)) || die "the temporary server did not answer within 30s"
		sleep 0.1
	done
	local -a sql=("${client[@]}")
	[[ -z $MARIADB_DATABASE ]] || sql+=("--database=$MARIADB_DATABASE")
	local f
	for f in "${files[@]}"; do
		case $f in
			*.sh)
				if [[ -x $f ]]; then
					log "running $f"
					"$f"
				else
					log "sourcing $f"
					# shellcheck disable=SC1090
					. "$f"
				fi
				;;
			*.sql) log "running $f"; MYSQL_PWD=$root_pw "${sql[@]}" <"$f" ;;
			*.sql.gz) log "running $f"; gzip -dc "$f" | MYSQL_PWD=$root_pw "${sql[@]}" ;;
			*.sql.xz) log "running $f"; xz -dc "$f" | MYSQL_PWD=$root_pw "${sql[@]}" ;;
			*.sql.zst) log "running $f"; zstd -dc "$f" | MYSQL_PWD=$root_pw "${sql[@]}" ;;
			*) log "ignoring $f" ;;
		esac
	done
	kill -TERM "$pid"
	wait "$pid" || die "the temporary server did not shut down cleanly"
}

main() {
	if [[ ${1:-} == -* ]]; then
		set -- mariadbd "$@"
	fi
	if [[ ${1:-} == mariadbd || ${1:-} == mysqld ]] && ! wants_help "$@"; then
		setup_env
		if ((EUID == 0)); then
			become_mysql "$@"
		fi
		if [[ -d $DATADIR/mysql ]]; then
			log "$DATADIR already holds a data directory; skipping initialisation"
		else
			init_datadir "$@"
		fi
		# The server does not need the secrets.
		unset MARIADB_ROOT_PASSWORD MARIADB_PASSWORD
	fi
	exec "$@"
}

main "$@"
