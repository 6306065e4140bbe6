# netbe: build, test, demo, bench. `make test` and `make demo` install what they need.
CC      ?= cc
PKGS    := lua5.4 libevent slirp
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Wno-unused-parameter
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) -fPIC -I. $(PKG_CFLAGS)
LIBS    = $(PKG_LIBS) -lpthread
MODLIBS = $(shell pkg-config --libs libevent slirp 2>/dev/null) -lpthread
# FreeBSD: the netgraph backend calls libnetgraph.
OSLIBS  := $(if $(filter FreeBSD,$(shell uname -s)),-lnetgraph)
LIBS    += $(OSLIBS)
MODLIBS += $(OSLIBS)
# Embedders (and C tests) that call netbe_send from another thread make the
# base thread-aware.
LIBS    += $(shell pkg-config --libs libevent_pthreads 2>/dev/null)
SAN     := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
PREFIX  ?= /usr/local
LUAVER  := 5.4

EXAMPLES := $(patsubst %.c,%,$(wildcard examples/*.c))
CTESTS   := $(patsubst tests/c/%.c,build/tests/%,$(wildcard tests/c/*.c))
# libFuzzer harnesses (tests/fuzz/NAME.c -> build/fuzz/NAME): Debian's clang,
# ASan and UBSan; scripts/fuzz runs them.
FUZZ_CC  := clang
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZERS  := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/*.c))

.PHONY: all deps test demo bench fuzz fuzzers install clean
all: libnetbe.a lua/netbe.so $(EXAMPLES) $(CTESTS)

deps:
	@scripts/install-deps

netbe.o: netbe.c netbe.h
	$(CC) $(ALL_CFLAGS) -c -o $@ netbe.c

libnetbe.a: netbe.o
	ar rcs $@ $^

lua/netbe.so: lua/netbe_lua.c netbe.o netbe.h
	$(CC) $(ALL_CFLAGS) -shared -o $@ lua/netbe_lua.c netbe.o $(MODLIBS)

examples/%: examples/%.c libnetbe.a netbe.h
	$(CC) $(ALL_CFLAGS) -o $@ $< libnetbe.a $(LIBS)

build/tests/%: tests/c/%.c netbe.c netbe.h
	@mkdir -p build/tests
	$(CC) $(ALL_CFLAGS) $(SAN) -o $@ $< netbe.c $(LIBS)

build/fuzz/netbe.o: netbe.c netbe.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(ALL_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c -o $@ netbe.c

build/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz.h build/fuzz/netbe.o
	$(FUZZ_CC) $(ALL_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $< build/fuzz/netbe.o $(LIBS)

# The Lua module under ASan and UBSan for the Lua-side fuzzer, which loads
# it into lua5.4 with ASan's runtime preloaded.
build/fuzz/lua/netbe.so: lua/netbe_lua.c netbe.c netbe.h
	@mkdir -p build/fuzz/lua
	$(FUZZ_CC) $(ALL_CFLAGS) $(FUZZ_SAN) -shared-libasan -shared -o $@ lua/netbe_lua.c \
	  netbe.c $(MODLIBS)

fuzzers: $(FUZZERS) build/fuzz/lua/netbe.so

test: deps
	@$(MAKE) --no-print-directory all fuzzers
	@scripts/run-tests

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo

bench: deps
	@$(MAKE) --no-print-directory all
	@scripts/bench

fuzz: deps
	@$(MAKE) --no-print-directory fuzzers
	@scripts/fuzz

install: all
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/bin \
	  $(DESTDIR)$(PREFIX)/lib/lua/$(LUAVER) $(DESTDIR)$(PREFIX)/share/lua/$(LUAVER)/netbe
	install -m 644 netbe.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 libnetbe.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 lua/netbe.so $(DESTDIR)$(PREFIX)/lib/lua/$(LUAVER)/
	install -m 644 lua/netbe/*.lua $(DESTDIR)$(PREFIX)/share/lua/$(LUAVER)/netbe/
	install -m 755 scripts/netbe $(DESTDIR)$(PREFIX)/bin/

clean:
	rm -rf build *.o *.a lua/*.so $(EXAMPLES)
