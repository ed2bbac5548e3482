# Magnetar — the one Makefile. Every output goes under $(BUILD).
#
#   make                 build every binary into build/bin/
#   make deps            install the Debian 12 packages (root) or print the line
#   make run             deps + build + `magnetar up` with development defaults
#   make test            deps + build + unit (cmocka) and integration (pytest)
#   make SANITIZE=address,undefined test    the same under ASan/UBSan
#   make fuzz FUZZ_SECONDS=N                 every libFuzzer target for N s

SANITIZE ?=
comma    := ,
# A sanitizer build never shares objects with the plain one.
BUILD    ?= build$(if $(SANITIZE),/sanitize-$(subst $(comma),-,$(SANITIZE)))
CC       ?= cc
PYTHON   ?= /usr/bin/python3

PKGS      := libmicrohttpd libprotobuf-c jansson sqlite3 openssl libcurl
# Asked once per make run, when this file is read. `make run` and `make test`
# install the packages first and then build in a fresh make (see below), so
# a first run on a fresh machine reads them after they exist; a build with
# packages missing stops here with the reason, not at the link.
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
NEEDS_PKGS := $(filter-out deps format format-check clean,$(or $(MAKECMDGOALS),all))
ifneq ($(NEEDS_PKGS),)
ifeq ($(filter run test,$(MAKECMDGOALS)),)
ifeq ($(PKG_LIBS),)
$(error build dependencies are missing (pkg-config knows none of: $(PKGS)); run `make deps` first)
endif
endif
endif

CFLAGS  ?= -O2 -g
CFLAGS  += -std=c17 -Wall -Wextra -Werror -D_GNU_SOURCE -MMD -MP -pthread \
           -fno-strict-aliasing -I. -I$(BUILD)/gen $(PKG_CFLAGS)
LDLIBS  += -lnng $(PKG_LIBS) -lprotobuf-c -lsqlite3 -lpthread
# common/sandbox.c (seccomp allow-lists) is in every service.
LDLIBS  += -lseccomp
ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

BIN := $(BUILD)/bin
OBJ := $(BUILD)/obj
GEN := $(BUILD)/gen

# ---- protobuf-c contracts ------------------------------------------------
PROTOS    := $(wildcard proto/*.proto)
PROTO_C   := $(patsubst proto/%.proto,$(GEN)/%.pb-c.c,$(PROTOS))
PROTO_H   := $(PROTO_C:.c=.h)
PROTO_OBJ := $(patsubst $(GEN)/%.c,$(OBJ)/gen/%.o,$(PROTO_C))

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -Iproto $<

# Generated headers must exist before anything that includes them compiles.
$(OBJ)/gen/%.o: $(GEN)/%.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-unused-parameter -c -o $@ $<

$(OBJ)/%.o: %.c | $(PROTO_H)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# ---- common library ------------------------------------------------------
COMMON_SRC := $(wildcard common/*.c)
COMMON_OBJ := $(patsubst %.c,$(OBJ)/%.o,$(COMMON_SRC))
LIBCOMMON  := $(BUILD)/lib/libmagnetar-common.a

$(LIBCOMMON): $(COMMON_OBJ) $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# ---- libraries shared by programs (lib/<name>/) ---------------------------
# Code two programs need is a library of its own, never one program's
# objects linked into another (tests/structure/check.sh checks the binaries).
# pwstore: the Pwned Passwords formats, for magnetar-breach and magctl.
PWSTORE_SRC := $(wildcard lib/pwstore/*.c)
PWSTORE_OBJ := $(patsubst %.c,$(OBJ)/%.o,$(PWSTORE_SRC))
LIBPWSTORE  := $(BUILD)/lib/libmagnetar-pwstore.a

$(LIBPWSTORE): $(PWSTORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

# ---- programs ------------------------------------------------------------
# Each program is a folder; its main.c is kept out of the objects that tests
# link, so a unit test exercises exactly the code the service runs.
# <program>_LIBS: the lib/ archives it links (before libmagnetar-common.a).
SERVICES := auth audit breach terminal
define program
$(1)_SRC  := $(wildcard $(2)/*.c)
$(1)_OBJ  := $$(patsubst %.c,$(OBJ)/%.o,$$($(1)_SRC))
$(1)_LIBO := $$(filter-out $(OBJ)/$(2)/main.o,$$($(1)_OBJ))
$(BIN)/$(3): $$($(1)_OBJ) $$($(1)_LIBS) $(LIBCOMMON)
	@mkdir -p $(BIN)
	$(CC) $(LDFLAGS) $$($(1)_LDFLAGS) -o $$@ $$^ $(LDLIBS) $$($(1)_LDLIBS)
PROGRAMS += $(BIN)/$(3)
endef
# MAGNETAR_FAULT_ALLOC (test only): the services' own calls to these go to
# common/fault_alloc.c, which can fail every Nth one; shared libraries keep
# libc's. magctl, the supervisor and the tests are linked without it.
ALLOC_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup \
              -Wl,--wrap=asprintf,--wrap=vasprintf
gateway_LDFLAGS := $(ALLOC_WRAP)
$(foreach s,$(SERVICES),$(eval $(s)_LDFLAGS := $(ALLOC_WRAP)))
# Libraries only one program needs stay out of the others.
auth_LDLIBS := -largon2 -loath
terminal_LDLIBS := -lseccomp
gateway_LDLIBS := -lwslay
# `magctl breach import` writes the store the service reads: both link the
# library, neither links the other's objects.
breach_LIBS := $(LIBPWSTORE)
magctl_LIBS := $(LIBPWSTORE)
# The supervisor links each service's variable table (its vars.o: data and
# the table's check) to filter and check every service's configuration.
supervisor_LIBS := $(OBJ)/gateway/vars.o $(foreach s,$(SERVICES),$(OBJ)/services/$(s)/vars.o)
$(eval $(call program,gateway,gateway,magnetar-gateway))
$(foreach s,$(SERVICES),$(eval $(call program,$(s),services/$(s),magnetar-$(s))))
$(eval $(call program,magctl,tools/magctl,magctl))
$(eval $(call program,supervisor,tools/magnetar,magnetar))

.DEFAULT_GOAL := all
all: $(PROGRAMS)

# ---- unit tests (cmocka): tests/unit/<module>_test.c -----------------------
# A test may link a program's objects: name them in <test>_LINK.
UNIT_SRC   := $(wildcard tests/unit/*_test.c)
UNIT_BIN   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
outbox_test_LINK := $(audit_LIBO)
auth_test_LINK := $(auth_LIBO)
# The real tables: each program's, and the supervisor's list of them.
config_test_LINK := $(supervisor_LIBS) $(OBJ)/tools/magnetar/programs.o
# The signer's own round-trip tests; it is auth's, so the test links it alone.
jwt_test_LINK := $(OBJ)/services/auth/jwtsign.o
auth_test_LDLIBS := -largon2 -loath
auth_throttle_test_LINK := $(auth_LIBO)
auth_throttle_test_LDLIBS := -largon2 -loath
audit_log_test_LINK := $(audit_LIBO)
audit_crypto_test_LINK := $(audit_LIBO)
gateway_netaddr_test_LINK := $(gateway_LIBO)
gateway_origin_test_LINK := $(gateway_LIBO)
gateway_ratelimit_test_LINK := $(gateway_LIBO)
gateway_idem_test_LINK := $(gateway_LIBO)
gateway_pipeline_test_LINK := $(gateway_LIBO)
# The proxy's pure readers alone.
gateway_upstream_test_LINK := $(OBJ)/gateway/upstream.o
# GET /openapi.yaml serves docs/openapi.yaml built into the gateway; main.c
# alone refers to it, so tests linking $(gateway_LIBO) need no generated file.
$(GEN)/openapi_yaml.c: docs/openapi.yaml
	@mkdir -p $(GEN)
	xxd -i $< >$@
$(BIN)/magnetar-gateway: $(OBJ)/gen/openapi_yaml.o
# The parsers' and the store's tests need only the library; the service's
# own tests link its objects and the library they call.
breach_hibp_test_LINK := $(LIBPWSTORE)
breach_pwstore_test_LINK := $(LIBPWSTORE)
breach_cache_test_LINK := $(breach_LIBO) $(LIBPWSTORE)
breach_range_test_LINK := $(breach_LIBO) $(LIBPWSTORE)
terminal_validate_test_LINK := $(terminal_LIBO)
terminal_validate_test_LDLIBS := -lseccomp
terminal_spawner_test_LINK := $(terminal_LIBO)
terminal_spawner_test_LDLIBS := -lseccomp
# Tests linking the gateway's objects link wsbridge.o, hence libwslay.
gateway_netaddr_test_LDLIBS := -lwslay
gateway_origin_test_LDLIBS := -lwslay
gateway_ratelimit_test_LDLIBS := -lwslay
gateway_idem_test_LDLIBS := -lwslay
gateway_pipeline_test_LDLIBS := -lwslay

.SECONDEXPANSION:
$(BUILD)/tests/%: $(OBJ)/tests/unit/%.o $$(%_LINK) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $($*_LDLIBS) -lcmocka

# ---- stand-in programs: tests/producers/<name>.c -> $(BUILD)/tests/<name> ---
PRODUCERS_SRC := $(wildcard tests/producers/*.c)
PRODUCERS_BIN := $(patsubst tests/producers/%.c,$(BUILD)/tests/%,$(PRODUCERS_SRC))
$(PRODUCERS_BIN): $(BUILD)/tests/%: $(OBJ)/tests/producers/%.o $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)
integration: $(PRODUCERS_BIN)
# The audit ingest benchmark links the audit service's objects (plain baseline).
$(BUILD)/tests/audit_ingest: $(OBJ)/tests/bench/audit_ingest.o $(audit_LIBO) $(LIBCOMMON)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: all
	MAGNETAR_BUILD=$(abspath $(BUILD)) $(PYTHON) -m pytest -q tests/integration

# deps first, then a fresh make: this one read pkg-config before deps ran.
test: deps
	$(MAKE) all
	$(MAKE) structure
	$(MAKE) unit
	$(MAKE) integration

# The design's boundaries, checked on the sources and the binaries
# (tests/structure/check.sh says which).
structure: all
	sh tests/structure/check.sh $(BIN)

# ---- fuzzing (clang libFuzzer) ---------------------------------------------
FUZZ_SECONDS ?= 10
fuzz:
	$(MAKE) -f tests/fuzz/fuzz.mk FUZZ_SECONDS=$(FUZZ_SECONDS)

# ---- running ---------------------------------------------------------------
deps:
	@sh tools/deps.sh

run: deps
	$(MAKE) all
	$(BIN)/magnetar up

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	clang-format --dry-run -Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD)

.DELETE_ON_ERROR:
.PHONY: all structure unit integration test fuzz deps run format format-check clean
.PRECIOUS: $(GEN)/%.pb-c.c $(GEN)/%.pb-c.h $(OBJ)/%.o $(OBJ)/gen/%.o

-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)
