# oauth_tokens: PGXS build.  `make test` and `make demo` work on a fresh
# Debian 12 machine as root: scripts/setup.sh installs what is missing.

MODULE_big = oauth_tokens
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/*.c)))
EXTENSION = oauth_tokens
# Versions: oauth_tokens--1.0.sql is the released 1.0, frozen (never edit
# it).  The current version's install script is built from src/sql/*.sql;
# every change to src/sql also goes into the upgrade script from the previous
# version (test/t/400_upgrade.pl checks that both give the same objects).
EXT_VERSION = 1.1
DATA_built = oauth_tokens--$(EXT_VERSION).sql
DATA = oauth_tokens--1.0.sql oauth_tokens--1.0--1.1.sql
PG_CPPFLAGS = -I$(srcdir)/src
# the version the library reports (PG_MODULE_MAGIC_EXT, src/compat.h)
PG_CPPFLAGS += -DOAUTH_TOKENS_VERSION=\"$(EXT_VERSION)\"
# WERROR=1: any compiler warning fails the build, gcc's and clang's bitcode
# pass alike (scripts/matrix.sh builds every major so)
ifeq ($(WERROR),1)
PG_CPPFLAGS += -Werror
endif
# libcrypto (OpenSSL, which PostgreSQL itself links): signed client assertions (src/jwt.c)
SHLIB_LINK = -lcurl -lcrypto

# `make installcheck` runs pg_regress against the running server that
# PGHOST/PGPORT/PGUSER name (a superuser; the server must preload the library
# and have no key ring yet: sql/00_preflight says what is missing), then the
# TAP tests, which make their own clusters.  `make check-temp` runs the same
# suite in a temporary instance configured by test/regress.conf (`make test`).
REGRESS = $(patsubst sql/%.sql,%,$(sort $(wildcard sql/*.sql)))
REGRESS_OPTS = --load-extension=pgcrypto
REGRESS_TEMP_OPTS = --temp-instance=tmp_check_regress \
	--temp-config=$(srcdir)/test/regress.conf
TAP_TESTS = 1
PROVE_FLAGS = -I $(srcdir)/test --timer
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))
EXTRA_CLEAN = tmp_check tmp_check_regress results regression.diffs regression.out \
	oauth_tokens--$(EXT_VERSION).sql

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifeq ($(wildcard $(PGXS)),)
# No server development files yet: only the set-up targets below can run.
.DEFAULT_GOAL := test
else
include $(PGXS)
endif

# PGXS tracks no header dependencies; every object depends on every header.
$(OBJS): $(wildcard src/*.h)
src/oauth_tokens.o: Makefile

oauth_tokens--$(EXT_VERSION).sql: $(sort $(wildcard src/sql/*.sql))
	cat $^ > $@

.PHONY: test test-all demo bench setup check-temp deb dist sanitize-test fuzz
# the PGXN archive of tag vVERSION (META.json), into build/dist (DIST_REF,
# DIST_OUT: scripts/dist.sh)
dist:
	bash scripts/dist.sh

# Debian packages postgresql-NN-oauth-tokens (debian/, pg_buildext), into
# build/deb (DEB_OUT=dir)
deb:
	bash scripts/deb.sh

check-temp:
ifneq ($(strip $(REGRESS)),)
	$(pg_regress_installcheck) $(REGRESS_TEMP_OPTS) $(REGRESS_OPTS) $(REGRESS)
endif
ifneq ($(strip $(TAP_TESTS)),)
	$(prove_installcheck)
endif

setup:
	bash scripts/setup.sh

# `make test PG=17` runs the suite against another PostgreSQL major in a Debian
# root filesystem that has it; `make test-all` runs 15 (natively), 17 and 18.
test:
ifeq ($(PG),)
	bash scripts/test.sh
else
	bash scripts/matrix.sh $(PG)
endif

test-all:
	bash scripts/test-all.sh

demo:
	bash scripts/demo.sh

bench:
	bash bench/run.sh

# ASan and UBSan build of the extension, run against pg_regress and a part of
# the TAP suite (SANITIZE_TESTS=all: every test); see README, Testing
sanitize-test:
	bash scripts/sanitize.sh

# libFuzzer targets for the answer reader and the URL filler (fuzz/);
# FUZZ_SECONDS per target, 60 by default
fuzz:
	bash scripts/fuzz.sh
