#!/usr/bin/env bash
# Entrypoint of cloner's offline-built PostgreSQL 15 image.
#
# It honours the environment contract of the official `postgres` image:
#   POSTGRES_PASSWORD / POSTGRES_PASSWORD_FILE  superuser password (required
#                                              unless POSTGRES_HOST_AUTH_METHOD=trust)
#   POSTGRES_USER (default postgres), POSTGRES_DB (default $POSTGRES_USER),
#   PGDATA, POSTGRES_INITDB_ARGS, POSTGRES_INITDB_WALDIR,
#   POSTGRES_HOST_AUTH_METHOD (default scram-sha-256),
#   /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz|*.sql.xz|*.sql.zst
# POSTGRES_PASSWORD, _USER, _DB and _INITDB_ARGS may also come from a file
# named by the same variable with a _FILE suffix (Docker secrets).
#
# Tenant containers run with a read-only root filesystem, as uid 999, with
# no capabilities and no-new-privileges, and with tmpfs on /tmp and
# /var/run/postgresql. So, when not root, this script never chowns or
# chmods anything it does not own and writes only below $PGDATA, /tmp and
# /var/run/postgresql.
#
# Initialisation is on the critical path of provisioning, so it avoids
# everything that is not needed: no temporary server unless there are init
# scripts, the database is created in single-user mode, and the cluster is
# fsynced once at the end instead of after every step.
set -Eeo pipefail

readonly PG_UID=999
readonly PG_GID=999
readonly INITDB_DIR=/docker-entrypoint-initdb.d

log() {
	# printf's %(...)T is a bash builtin: no `date` process per message.
	printf '%(%Y-%m-%d %H:%M:%S)T [entrypoint] %s\n' -1 "$*" >&2
}

die() {
	log "error: $*"
	exit 1
}

# file_env VAR [DEFAULT]: export VAR from VAR or from the file named by
# VAR_FILE (the official image's Docker-secrets convention).
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

# The same arguments the official image treats as "just print something".
wants_help() {
	local arg
	for arg; do
		case $arg in
			'-?' | --help | --describe-config | -V | --version) return 0 ;;
		esac
	done
	return 1
}

setup_env() {
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	file_env POSTGRES_INITDB_ARGS
	: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
	export PGDATA=${PGDATA:-/var/lib/postgresql/data}
	# The method is pasted into pg_hba.conf: allow a bare keyword only.
	[[ $POSTGRES_HOST_AUTH_METHOD =~ ^[a-z0-9-]+$ ]] ||
		die "POSTGRES_HOST_AUTH_METHOD=$POSTGRES_HOST_AUTH_METHOD is not an auth method keyword"
	# Single-user mode reads one statement per line; a control character in
	# the name would split the CREATE DATABASE statement.
	[[ $POSTGRES_DB != *[[:cntrl:]]* ]] || die "POSTGRES_DB contains a control character"
}

# Started as root (allowed by the official contract): make the directories
# ours, then re-execute this script as uid 999. Needs CAP_CHOWN/CAP_SETUID,
# which the hardened tenant containers do not have; they start as 999.
become_postgres() {
	mkdir -p "$PGDATA" /var/run/postgresql
	if [[ $(stat -c %u:%g "$PGDATA") != "$PG_UID:$PG_GID" ]]; then
		chown -R "$PG_UID:$PG_GID" "$PGDATA" || die "cannot chown $PGDATA to $PG_UID:$PG_GID"
	fi
	chmod 0700 "$PGDATA" || die "cannot chmod $PGDATA"
	chown "$PG_UID:$PG_GID" /var/run/postgresql || die "cannot chown /var/run/postgresql"
	chmod 3777 /var/run/postgresql || die "cannot chmod /var/run/postgresql"
	exec setpriv --reuid="$PG_UID" --regid="$PG_GID" --init-groups -- "${BASH_SOURCE[0]}" "$@"
}

# initdb refuses to run when the uid has no passwd entry (e.g. `--user 1234`).
# /etc is read-only, so borrow nss_wrapper with files in /tmp, for the
# duration of the initialisation only.
fake_passwd_if_needed() {
	if getent passwd "$(id -u)" >/dev/null; then
		return 0
	fi
	local wrapper
	wrapper=$(echo /usr/lib/*/libnss_wrapper.so)
	[[ -f $wrapper ]] || die "uid $(id -u) has no passwd entry and nss_wrapper is missing"
	NSS_WRAPPER_PASSWD=$(mktemp)
	NSS_WRAPPER_GROUP=$(mktemp)
	printf 'postgres:x:%s:%s:PostgreSQL:%s:/bin/false\n' "$(id -u)" "$(id -g)" "$PGDATA" >"$NSS_WRAPPER_PASSWD"
	printf 'postgres:x:%s:\n' "$(id -g)" >"$NSS_WRAPPER_GROUP"
	export NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP LD_PRELOAD=$wrapper
}

drop_fake_passwd() {
	if [[ -n ${NSS_WRAPPER_PASSWD:-} ]]; then
		rm -f "$NSS_WRAPPER_PASSWD" "$NSS_WRAPPER_GROUP"
		unset LD_PRELOAD NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
	fi
}

init_cluster() {
	local auth_host=scram-sha-256
	if [[ -z $POSTGRES_PASSWORD ]]; then
		[[ $POSTGRES_HOST_AUTH_METHOD == trust ]] ||
			die "the database is uninitialised and no superuser password was given:" \
				"set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE)," \
				"or POSTGRES_HOST_AUTH_METHOD=trust to allow passwordless connections (unsafe)"
		# initdb rejects password auth without a password to check against.
		auth_host=trust
	fi
	if [[ $POSTGRES_HOST_AUTH_METHOD == trust ]]; then
		log "warning: POSTGRES_HOST_AUTH_METHOD=trust: anyone who reaches the port connects without a password"
	fi

	mkdir -p "$PGDATA"
	fake_passwd_if_needed

	# --no-sync: every step (initdb, CREATE DATABASE, init scripts) skips its
	# own fsync pass; one `initdb --sync-only` at the end makes the finished
	# cluster durable before the server starts. One pass instead of three.
	local -a args=(
		--pgdata="$PGDATA"
		--username="$POSTGRES_USER"
		--auth-local=trust
		--auth-host="$auth_host"
		--encoding=UTF8
		--no-instructions
		--no-sync
	)
	if [[ -n ${POSTGRES_INITDB_WALDIR:-} ]]; then
		args+=(--waldir="$POSTGRES_INITDB_WALDIR")
	fi
	# Whitespace-separated, like the official image (no quote handling).
	local -a extra=()
	read -r -a extra <<<"$POSTGRES_INITDB_ARGS"

	log "initialising a new cluster in $PGDATA"
	# initdb's progress chatter is noise in every tenant's log; errors still
	# reach stderr. UTC unless TZ says otherwise: the same on every host,
	# and initdb takes it as given instead of working out the system zone.
	if [[ -n $POSTGRES_PASSWORD ]]; then
		# A pipe, not a file: the password never touches a disk or argv. The
		# substitution sits on initdb's own command line so its fd is open
		# exactly while initdb runs.
		TZ=${TZ:-UTC} initdb "${args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
			"${extra[@]}" >/dev/null
	else
		TZ=${TZ:-UTC} initdb "${args[@]}" "${extra[@]}" >/dev/null
	fi

	cat >>"$PGDATA/postgresql.conf" <<-'EOF'

		# --- set by the cloner entrypoint at initialisation ---
		listen_addresses = '*'
		password_encryption = 'scram-sha-256'
		# Sized for density: many small tenant servers per host.
		max_connections = 50
		shared_buffers = 32MB
		# The image leaves out LLVM (about 150 MB) to stay small.
		jit = off
	EOF

	cat >"$PGDATA/pg_hba.conf" <<-EOF
		# Written by the cloner entrypoint at initialisation.
		# TYPE  DATABASE     USER  ADDRESS    METHOD
		local   all          all              trust
		local   replication  all              trust
		host    all          all   0.0.0.0/0  $POSTGRES_HOST_AUTH_METHOD
		host    all          all   ::/0       $POSTGRES_HOST_AUTH_METHOD
	EOF

	if [[ $POSTGRES_DB != postgres ]]; then
		create_database
	fi
	run_init_scripts
	# The durability the steps above skipped: fsync every file once, before
	# anyone can connect (~0.05 s for a new cluster on this kind of host).
	initdb --sync-only --pgdata="$PGDATA" >/dev/null
	drop_fake_passwd
	log "initialisation complete"
}

# Single-user mode: no postmaster, no socket, no readiness race, ~0.1 s.
create_database() {
	local ident="\"${POSTGRES_DB//\"/\"\"}\""
	log "creating database $ident"
	# exit_on_error: single-user mode otherwise reports an ERROR and still
	# exits 0. fsync=off: init_cluster syncs everything once at the end.
	printf 'CREATE DATABASE %s;\n' "$ident" |
		postgres --single -D "$PGDATA" -c exit_on_error=on -c fsync=off -c log_checkpoints=off \
			postgres >/dev/null ||
		die "could not create database $ident"
}

run_init_scripts() {
	local -a files=()
	local f
	shopt -s nullglob
	files=("$INITDB_DIR"/*)
	shopt -u nullglob
	if ((${#files[@]} == 0)); then
		return 0
	fi

	# The temporary server listens on a private socket directory only, so
	# neither TCP clients nor `pg_isready` in the container see a server
	# that is about to be stopped again. fsync=off: a bulk load runs much
	# faster, and init_cluster syncs everything once afterwards.
	local sockdir=/var/run/postgresql/init
	mkdir -p "$sockdir"
	log "starting a temporary server for $INITDB_DIR"
	# Its log goes where the final server's goes: stderr, i.e. `docker logs`.
	pg_ctl -D "$PGDATA" -w -l /dev/stderr \
		-o "-c listen_addresses='' -c unix_socket_directories=$sockdir -c fsync=off" start >/dev/null

	export PGHOST=$sockdir PGUSER=$POSTGRES_USER PGDATABASE=$POSTGRES_DB
	local -a psql=(psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet)
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
			*.sql)
				log "running $f"
				"${psql[@]}" -f "$f"
				;;
			*.sql.gz)
				log "running $f"
				gzip -dc "$f" | "${psql[@]}"
				;;
			*.sql.xz)
				log "running $f"
				xz -dc "$f" | "${psql[@]}"
				;;
			*.sql.zst)
				log "running $f"
				zstd -dc "$f" | "${psql[@]}"
				;;
			*) log "ignoring $f" ;;
		esac
	done
	unset PGHOST PGUSER PGDATABASE

	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	rmdir "$sockdir" 2>/dev/null || true
}

main() {
	if [[ ${1:-} == -* ]]; then
		set -- postgres "$@"
	fi
	if [[ ${1:-} == postgres ]] && ! wants_help "$@"; then
		setup_env
		if ((EUID == 0)); then
			become_postgres "$@"
		fi
		if [[ -s $PGDATA/PG_VERSION ]]; then
			log "$PGDATA already holds a cluster; skipping initialisation"
		else
			init_cluster
		fi
		# The server and its children do not need the secret.
		unset POSTGRES_PASSWORD
	fi
	exec "$@"
}

main "$@"
