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

.PHONY: all deps test demo bench fuzz install clean
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

# The Lua module's C side is tested compiled into the test, under the sanitizers.
build/tests/lua_module_test: lua/netbe_lua.c

test: deps
	@$(MAKE) --no-print-directory all
	@scripts/run-tests

demo: deps
	@$(MAKE) --no-print-directory all
	@scripts/demo

bench: deps
	@$(MAKE) --no-print-directory all
	@scripts/bench

fuzz: deps
	@$(MAKE) --no-print-directory all
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
