# fuzz.mk — builds and runs every libFuzzer target (tests/fuzz/*_fuzz.c).
# Called by `make fuzz FUZZ_SECONDS=N`. Each target links the real sources
# (common/, generated protobuf-c, and a program's objects where it needs
# them), instrumented with clang's fuzzer, ASan and UBSan.
FUZZ_SECONDS ?= 10
FUZZ_CC      ?= clang
FB           := build/fuzz
GEN          := $(FB)/gen
PKG_CFLAGS   := $(shell pkg-config --cflags libmicrohttpd libprotobuf-c jansson sqlite3 openssl)
PKG_LIBS     := $(shell pkg-config --libs libmicrohttpd libprotobuf-c jansson sqlite3 openssl)
FCFLAGS      := -g -O1 -std=c17 -D_GNU_SOURCE -pthread -I. -I$(GEN) $(PKG_CFLAGS) \
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FLIBS        := -lnng $(PKG_LIBS) -lprotobuf-c -lsqlite3 -lpthread
# common/sandbox.c (linked with the rest of common/) needs libseccomp.
FLIBS        += -lseccomp

PROTOS   := $(wildcard proto/*.proto)
PROTO_C  := $(patsubst proto/%.proto,$(GEN)/%.pb-c.c,$(PROTOS))
# tests/fuzz/support.c (the targets' shared set-up) rides along with common/;
# common/fault_alloc.c is only for programs linked with --wrap (Makefile).
COMMON   := $(filter-out common/fault_alloc.c,$(wildcard common/*.c)) tests/fuzz/support.c
TARGETS  := $(patsubst tests/fuzz/%.c,$(FB)/%,$(wildcard tests/fuzz/*_fuzz.c))
# proto_dispatch_fuzz.c is one target per service (its rule is below).
PROTO_SVCS := auth audit breach terminal
TARGETS  := $(filter-out $(FB)/proto_dispatch_fuzz,$(TARGETS)) \
            $(patsubst %,$(FB)/proto_%_fuzz,$(PROTO_SVCS))

all: run

$(GEN)/%.pb-c.c: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -Iproto $<

$(FB)/%_fuzz: tests/fuzz/%_fuzz.c $(COMMON) $(PROTO_C)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(COMMON) $(PROTO_C) $(FLIBS)

# lib/pwstore (the Pwned Passwords formats breach and magctl share): libc only.
PWSTORE_SRC := $(wildcard lib/pwstore/*.c)
PWSTORE_H   := lib/pwstore/pwstore.h

# hibp_parse links the library's parsers (pure: no curl, no SQLite).
HIBP_PARSE := lib/pwstore/hibp.c lib/pwstore/pairs.c
$(FB)/hibp_parse_fuzz: tests/fuzz/hibp_parse_fuzz.c $(HIBP_PARSE) $(PWSTORE_H) $(COMMON) $(PROTO_C)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(HIBP_PARSE) $(COMMON) $(PROTO_C) $(FLIBS)

# audit_append links the audit service's objects (all but main.c).
AUDIT_SRC := $(filter-out services/audit/main.c,$(wildcard services/audit/*.c))
$(FB)/audit_append_fuzz: tests/fuzz/audit_append_fuzz.c $(COMMON) $(PROTO_C) $(AUDIT_SRC)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(COMMON) $(PROTO_C) $(AUDIT_SRC) $(FLIBS)

# netaddr and origin link only the gateway's pure header parsers
# (gateway/policy.h) and the comma-list tokenizer they share (common/list.c).
GW_PARSE := gateway/netaddr.c gateway/origin.c common/list.c
$(FB)/netaddr_fuzz: tests/fuzz/netaddr_fuzz.c $(GW_PARSE)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(GW_PARSE)
$(FB)/origin_fuzz: tests/fuzz/origin_fuzz.c $(GW_PARSE)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(GW_PARSE)
# upstream links the proxy's pure readers (gateway/upstream.h) alone.
$(FB)/upstream_fuzz: tests/fuzz/upstream_fuzz.c gateway/upstream.c gateway/upstream.h
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< gateway/upstream.c

build: $(TARGETS)

# New inputs go to a scratch dir; the committed seeds stay as they are.
# Every target runs even when one before it crashed (its artifact goes to
# $(FB)/artifacts/<target>-crash-*); the run fails at the end if any did.
# The last lines of each run are libFuzzer's final "DONE cov: ft:" (or the
# crash) and its -print_final_stats numbers.
run: build
	@failed=""; for t in $(TARGETS); do \
		name=$$(basename $$t _fuzz); \
		mkdir -p $(FB)/corpus/$$name $(FB)/artifacts; \
		echo "== fuzz $$name for $(FUZZ_SECONDS)s"; \
		$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
			-print_final_stats=1 -artifact_prefix=$(FB)/artifacts/$$name- \
			$(FB)/corpus/$$name tests/fuzz/corpus/$$name \
			2>&1 | grep -E "^(#[0-9]|stat::|INFO: Seed|==|SUMMARY|artifact_prefix)|ERROR|_fuzz[(:]" | tail -10; \
		test $${PIPESTATUS[0]} -eq 0 || failed="$$failed $$name"; \
	done; \
	if [ -n "$$failed" ]; then echo "== fuzz: crashed:$$failed"; exit 1; fi

.PHONY: all build run
SHELL := /bin/bash
.SECONDARY:

# terminal_validate links the terminal's pure policy and frame parser.
TERMINAL_PURE := services/terminal/validate.c services/terminal/frame.c
$(FB)/terminal_validate_fuzz: tests/fuzz/terminal_validate_fuzz.c $(TERMINAL_PURE) $(COMMON) $(PROTO_C)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(TERMINAL_PURE) $(COMMON) $(PROTO_C) $(FLIBS)

# terminal_ws: a real libwslay server context, the gateway's check and the
# terminal's parser.
$(FB)/terminal_ws_fuzz: tests/fuzz/terminal_ws_fuzz.c gateway/wsframe.c $(TERMINAL_PURE) $(COMMON) $(PROTO_C)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< gateway/wsframe.c $(TERMINAL_PURE) $(COMMON) $(PROTO_C) $(FLIBS) -lwslay

# http_request runs the gateway's real daemons in-process: every gateway
# object but main.c (docs/openapi.yaml is replaced by a small constant), and
# auth's signer, with which the harness mints the tokens it presents.
# The targets below also depend on the headers of what they link.
COMMON_H := $(wildcard common/*.h)
GW_SRC := $(filter-out gateway/main.c,$(wildcard gateway/*.c))
$(FB)/http_request_fuzz: tests/fuzz/http_request_fuzz.c $(GW_SRC) $(wildcard gateway/*.h) \
                         $(COMMON) $(COMMON_H) $(PROTO_C) services/auth/jwtsign.c
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(GW_SRC) services/auth/jwtsign.c $(COMMON) $(PROTO_C) \
	    $(FLIBS) -lwslay

# proto_<svc>_fuzz: tests/fuzz/proto_dispatch_fuzz.c with -DPROTO_SVC_<SVC>,
# linked with the service's objects (all but main.c, which the target
# includes for its method table) and proto_<svc>_SRC, the lib/ it links.
proto_auth_LIBS   := -largon2 -loath
proto_breach_LIBS := -lcurl
proto_breach_SRC  := $(PWSTORE_SRC) $(PWSTORE_H)
svc_objs = $(filter-out services/$(1)/main.c,$(wildcard services/$(1)/*.c))
.SECONDEXPANSION:
$(FB)/proto_%_fuzz: tests/fuzz/proto_dispatch_fuzz.c $$(call svc_objs,%) services/%/main.c \
                    $$(wildcard services/%/*.h) $$(proto_%_SRC) $(COMMON) $(COMMON_H) $(PROTO_C)
	$(FUZZ_CC) $(FCFLAGS) -DPROTO_SVC_$(shell echo $* | tr a-z A-Z) -o $@ $< \
		$(call svc_objs,$*) $(filter %.c,$(proto_$*_SRC)) $(COMMON) $(PROTO_C) $(FLIBS) \
		$(proto_$*_LIBS)

# breach_import runs `magctl breach import` itself: magctl's objects (main.c
# is included by the target, for magctl_call) and lib/pwstore, as magctl links.
MAGCTL_SRC := $(filter-out tools/magctl/main.c,$(wildcard tools/magctl/*.c))
$(FB)/breach_import_fuzz: tests/fuzz/breach_import_fuzz.c tools/magctl/main.c $(MAGCTL_SRC) \
                          tools/magctl/magctl.h $(PWSTORE_H) $(PWSTORE_SRC) \
                          $(COMMON) $(COMMON_H) $(PROTO_C)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(MAGCTL_SRC) $(PWSTORE_SRC) $(COMMON) $(PROTO_C) $(FLIBS)

# gateway_settings links settings.c, the parsers it calls and the gateway's
# variable table.
GW_SETTINGS := gateway/settings.c gateway/netaddr.c gateway/origin.c gateway/ratelimit.c \
               gateway/vars.c

# config: common's parser with every program's table and the supervisor's
# list of them (tools/magnetar/programs.c), as the supervisor checks them.
VARS_SRC := gateway/vars.c $(wildcard services/*/vars.c) tools/magnetar/programs.c
$(FB)/config_fuzz: tests/fuzz/config_fuzz.c $(VARS_SRC) $(COMMON) $(COMMON_H) $(PROTO_C)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(VARS_SRC) $(COMMON) $(PROTO_C) $(FLIBS)
$(FB)/gateway_settings_fuzz: tests/fuzz/gateway_settings_fuzz.c $(GW_SETTINGS) \
                             $(wildcard gateway/*.h) $(COMMON) $(COMMON_H) $(PROTO_C)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(GW_SETTINGS) $(COMMON) $(PROTO_C) $(FLIBS)
