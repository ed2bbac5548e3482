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
COMMON   := $(wildcard common/*.c)
TARGETS  := $(patsubst tests/fuzz/%.c,$(FB)/%,$(wildcard tests/fuzz/*_fuzz.c))

all: run

$(GEN)/%.pb-c.c: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --c_out=$(GEN) -Iproto $<

$(FB)/%_fuzz: tests/fuzz/%_fuzz.c $(COMMON) $(PROTO_C)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(COMMON) $(PROTO_C) $(FLIBS)

# hibp_parse also links the breach service's parsers (pure: no curl, no SQLite).
BREACH_PARSE := services/breach/hibp.c services/breach/pairs.c
$(FB)/hibp_parse_fuzz: tests/fuzz/hibp_parse_fuzz.c $(BREACH_PARSE) $(COMMON) $(PROTO_C)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(BREACH_PARSE) $(COMMON) $(PROTO_C) $(FLIBS)

# audit_append links the audit service's objects (all but main.c).
AUDIT_SRC := $(filter-out services/audit/main.c,$(wildcard services/audit/*.c))
$(FB)/audit_append_fuzz: tests/fuzz/audit_append_fuzz.c $(COMMON) $(PROTO_C) $(AUDIT_SRC)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(COMMON) $(PROTO_C) $(AUDIT_SRC) $(FLIBS)

# netaddr and origin link only the gateway's pure header parsers
# (gateway/policy.h: libc, no common/ objects needed).
GW_PARSE := gateway/netaddr.c gateway/origin.c
$(FB)/netaddr_fuzz: tests/fuzz/netaddr_fuzz.c $(GW_PARSE)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(GW_PARSE)
$(FB)/origin_fuzz: tests/fuzz/origin_fuzz.c $(GW_PARSE)
	$(FUZZ_CC) $(FCFLAGS) -o $@ $< $(GW_PARSE)

build: $(TARGETS)

# New inputs go to a scratch dir; the committed seeds stay as they are.
run: build
	@set -e; for t in $(TARGETS); do \
		name=$$(basename $$t _fuzz); \
		mkdir -p $(FB)/corpus/$$name; \
		echo "== fuzz $$name for $(FUZZ_SECONDS)s"; \
		$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
			-print_final_stats=1 $(FB)/corpus/$$name tests/fuzz/corpus/$$name \
			2>&1 | grep -E "^(#|stat::number_of_executed_units|stat::peak_rss|INFO: Seed|==|SUMMARY)|ERROR" | tail -6; \
		test $${PIPESTATUS[0]} -eq 0; \
	done

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
