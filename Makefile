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

EXAMPLES := $(patsubst %.c,%,$(wildcard examples/*.c)) examples/vhost-user-net
VHOST_SRC := $(wildcard examples/vhost-user/*.c)
VHOST_HDR := $(wildcard examples/vhost-user/*.h)
# The C tests: one per source in tests/c. The drop-in's Linux test needs
# bhyve's headers from the FreeBSD sysroot (see the portability section).
CTESTS   := $(patsubst tests/c/%.c,build/tests/%,$(wildcard tests/c/*.c))
NETBE_FREEBSD_SYSROOT ?= $(abspath ../shared/freebsd-sysroot)
HAVE_SYSROOT := $(wildcard $(NETBE_FREEBSD_SYSROOT)/bhyve/net_backends.h)
ifeq ($(HAVE_SYSROOT),)
CTESTS := $(filter-out build/tests/bhyve_test,$(CTESTS))
CTESTS_SKIPPED := tests/c/bhyve_test.c: no FreeBSD sysroot with the bhyve headers at $(NETBE_FREEBSD_SYSROOT) (set NETBE_FREEBSD_SYSROOT)
endif
# libFuzzer harnesses (tests/fuzz/NAME.c -> build/fuzz/NAME): Debian's clang,
# ASan and UBSan; scripts/fuzz runs them.
FUZZ_CC  := clang
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZERS  := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/*.c))

# Embedders without libslirp or Lua: make OMIT_SLIRP=1 OMIT_LUA=1 install
# (netbe.h, "Build options"); the Lua module needs Lua.
LUA_MODULE := $(if $(OMIT_LUA),,lua/netbe.so)

.PHONY: all deps test demo bench fuzz fuzzers install clean
all: libnetbe.a $(LUA_MODULE) $(EXAMPLES) $(CTESTS)

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

examples/vhost-user-net: $(VHOST_SRC) $(VHOST_HDR) libnetbe.a netbe.h
	$(CC) $(ALL_CFLAGS) -o $@ $(VHOST_SRC) libnetbe.a $(LIBS)

# The same device under ASan and UBSan, for the C test that plays QEMU.
build/vhost-user-net: $(VHOST_SRC) $(VHOST_HDR) netbe.c netbe.h
	@mkdir -p build
	$(CC) $(ALL_CFLAGS) $(SAN) -o $@ $(VHOST_SRC) netbe.c $(LIBS)

build/tests/%: tests/c/%.c netbe.c netbe.h $(wildcard tests/c/*.h)
	@mkdir -p build/tests
	$(CC) $(ALL_CFLAGS) $(SAN) -o $@ $< netbe.c $(LIBS)

build/tests/vhost_client_test: build/vhost-user-net

# The Lua module's C side is tested compiled into the test, under the sanitizers.
build/tests/lua_module_test: lua/netbe_lua.c

build/fuzz/netbe.o: netbe.c netbe.h
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(ALL_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer-no-link -c -o $@ netbe.c

build/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz.h tests/c/allow.h build/fuzz/netbe.o
	$(FUZZ_CC) $(ALL_CFLAGS) $(FUZZ_SAN) -fsanitize=fuzzer -o $@ $< build/fuzz/netbe.o $(LIBS)

# The vhost-user harness compiles the example's sources into itself.
build/fuzz/vhost_msg: $(VHOST_SRC) $(VHOST_HDR)

# The Lua module under ASan and UBSan for the Lua-side fuzzer, which loads
# it into lua5.4 with ASan's runtime preloaded.
build/fuzz/lua/netbe.so: lua/netbe_lua.c netbe.c netbe.h
	@mkdir -p build/fuzz/lua
	$(FUZZ_CC) $(ALL_CFLAGS) $(FUZZ_SAN) -shared-libasan -shared -o $@ lua/netbe_lua.c \
	  netbe.c $(MODLIBS)

fuzzers: $(FUZZERS) build/fuzz/lua/netbe.so

# scripts/run-tests builds and runs the C tests this host can build, and
# names the others with why.
.PHONY: ctests-list ctests-skipped
ctests-list:
	@echo $(CTESTS)

ctests-skipped:
	@$(if $(CTESTS_SKIPPED),echo "$(CTESTS_SKIPPED)",:)

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

install: libnetbe.a build/netbe.pc $(LUA_MODULE)
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/bin \
	  $(DESTDIR)$(PREFIX)/lib/lua/$(LUAVER) $(DESTDIR)$(PREFIX)/share/lua/$(LUAVER)/netbe \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 netbe.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 libnetbe.a $(DESTDIR)$(PREFIX)/lib/
	install -m 644 build/netbe.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/
ifeq ($(OMIT_LUA),)
	install -m 755 lua/netbe.so $(DESTDIR)$(PREFIX)/lib/lua/$(LUAVER)/
	install -m 644 lua/netbe/*.lua $(DESTDIR)$(PREFIX)/share/lua/$(LUAVER)/netbe/
	install -m 755 scripts/netbe $(DESTDIR)$(PREFIX)/bin/
endif

clean:
	rm -rf build *.o *.a lua/*.so $(EXAMPLES)

# ==== Portability: FreeBSD tier, -pedantic builds, omit variants, pkg-config ====
# scripts/run-tests runs these as its "build" and "freebsd" tiers.
# bhyve 14's sources, for compiling its pci_virtio_net.c against the drop-in,
# and the FreeBSD kernel headers its pci_emul.h needs (dev/pci/pcireg.h).
NETBE_BHYVE_SRC ?= $(abspath ../ref/usr.sbin/bhyve)
NETBE_FREEBSD_SYS ?= $(abspath $(NETBE_BHYVE_SRC)/../../sys)
export NETBE_FREEBSD_SYSROOT

FREEBSD_CC   := scripts/freebsd-cc
FREEBSD_STD  := -std=c11 -pedantic-errors $(WARN) -Werror -I.
# bhyve's own headers need GNU C: debug.h's named variadic macros (arg...)
# with ", ##" pasting, and the __packed of net_backends.h.
FREEBSD_GNU  := -std=gnu11 $(WARN) -Werror -I. -I$(NETBE_FREEBSD_SYSROOT)/bhyve
FREEBSD_OBJS := $(patsubst %.c,build/freebsd/%.o,netbe.c lua/netbe_lua.c \
                  $(wildcard examples/*.c) $(wildcard tests/c/*.c)) \
                build/freebsd/netbe-omit-slirp.o build/freebsd/netbe-omit-lua.o \
                build/freebsd/netbe-omit-slirp-lua.o build/freebsd/examples/bhyve/net_backends_netbe.o
OMIT_DEFS_slirp      := -DNETBE_OMIT_SLIRP
OMIT_DEFS_lua        := -DNETBE_OMIT_LUA
OMIT_DEFS_slirp-lua  := -DNETBE_OMIT_SLIRP -DNETBE_OMIT_LUA

.PHONY: freebsd freebsd-list freebsd-nm pedantic install-check
freebsd: $(FREEBSD_OBJS) freebsd-nm

freebsd-list:
	@echo $(FREEBSD_OBJS)

build/freebsd/%.o: %.c netbe.h
	@mkdir -p $(dir $@)
	$(FREEBSD_CC) $(FREEBSD_STD) -c -o $@ $<

build/freebsd/netbe-omit-%.o: netbe.c netbe.h
	@mkdir -p $(dir $@)
	$(FREEBSD_CC) $(FREEBSD_STD) $(OMIT_DEFS_$*) -c -o $@ netbe.c

build/freebsd/examples/bhyve/%.o: examples/bhyve/%.c netbe.h
	@mkdir -p $(dir $@)
	$(FREEBSD_CC) $(FREEBSD_GNU) -c -o $@ $<

build/freebsd/tests/c/bhyve_test.o: tests/c/bhyve_test.c netbe.h
	@mkdir -p $(dir $@)
	$(FREEBSD_CC) $(FREEBSD_STD) -I$(NETBE_FREEBSD_SYSROOT)/bhyve -c -o $@ $<

# bhyve's device model, unmodified, against the drop-in's headers.
build/freebsd/pci_virtio_net.o: $(NETBE_BHYVE_SRC)/pci_virtio_net.c
	@mkdir -p $(dir $@)
	$(FREEBSD_CC) $(FREEBSD_GNU) -I$(NETBE_BHYVE_SRC) -isystem $(NETBE_FREEBSD_SYS) -c -o $@ $<

# Every netbe_* that bhyve's net_backends.h declares is defined exactly once
# by netbe.o and the drop-in together; what pci_virtio_net.o calls (when
# built) is among them.
BHYVE_API := $(NETBE_FREEBSD_SYSROOT)/bhyve/net_backends.h
freebsd-nm: build/freebsd/netbe.o build/freebsd/examples/bhyve/net_backends_netbe.o
	@defined=$$(nm -g --defined-only $^ | awk '$$2 == "T" {print $$3}'); \
	 status=0; \
	 for f in $$(grep -o 'netbe_[a-z_]*(' $(BHYVE_API) | tr -d '(' | sort -u); do \
	   n=$$(printf '%s\n' $$defined | grep -cx "$$f"); \
	   [ "$$n" -eq 1 ] || { echo "$$f: defined $$n times, expected once"; status=1; }; \
	 done; \
	 if [ -f build/freebsd/pci_virtio_net.o ]; then \
	   for f in $$(nm -u build/freebsd/pci_virtio_net.o | awk '$$2 ~ /^netbe_/ {print $$2}'); do \
	     printf '%s\n' $$defined | grep -qx "$$f" || { echo "pci_virtio_net.o calls $$f: undefined"; status=1; }; \
	   done; \
	 fi; \
	 [ $$status -eq 0 ] && echo "freebsd-nm: every netbe_* of net_backends.h defined once"; \
	 exit $$status

# netbe.c as standard C11, with gcc and with clang.
pedantic: build/pedantic/netbe-gcc.o build/pedantic/netbe-clang.o
build/pedantic/netbe-%.o: netbe.c netbe.h
	@mkdir -p $(dir $@)
	$* -std=c11 -pedantic-errors $(WARN) -Werror $(CFLAGS) -I. $(PKG_CFLAGS) -c -o $@ netbe.c

# The omit variants on Linux: built and linked without libslirp, glib or Lua.
EVENT_CFLAGS = $(shell pkg-config --cflags libevent 2>/dev/null)
EVENT_LIBS   = $(shell pkg-config --libs libevent libevent_pthreads 2>/dev/null) -lpthread
build/tests/omit_test: tests/c/omit_test.c netbe.c netbe.h
	@mkdir -p build/tests
	$(CC) -std=gnu11 $(WARN) $(CFLAGS) -I. $(OMIT_DEFS_slirp-lua) $(EVENT_CFLAGS) $(SAN) \
	  -o $@ $< netbe.c $(EVENT_LIBS)

# port_test includes netbe.c to reach its internals.
build/tests/port_test: tests/c/port_test.c netbe.c netbe.h
	@mkdir -p build/tests
	$(CC) $(ALL_CFLAGS) $(SAN) -o $@ $< $(LIBS)

# The drop-in on Linux: bhyve's headers from the sysroot, and in
# tests/c/bhyve-shim the few libnv declarations they need.
build/tests/bhyve_test: tests/c/bhyve_test.c examples/bhyve/net_backends_netbe.c netbe.c netbe.h
	@mkdir -p build/tests
	$(CC) $(ALL_CFLAGS) $(SAN) -Itests/c/bhyve-shim -I$(NETBE_FREEBSD_SYSROOT)/bhyve \
	  -o $@ $< examples/bhyve/net_backends_netbe.c netbe.c $(LIBS)

ifneq ($(OMIT_SLIRP),)
ALL_CFLAGS += -DNETBE_OMIT_SLIRP
PKGS := $(filter-out slirp,$(PKGS))
endif
ifneq ($(OMIT_LUA),)
ALL_CFLAGS += -DNETBE_OMIT_LUA
PKGS := $(filter-out lua5.4,$(PKGS))
endif

# netbe.pc lists what this build needs: Requires, not Requires.private, as
# libnetbe.a is static (pkg-config --libs then gives the whole link line).
NETBE_VERSION_STR = $(shell sed -n 's/^\#define NETBE_VERSION  *"\(.*\)"/\1/p' netbe.h)
PC_REQUIRES = $(PKGS) libevent_pthreads
# Made on every run: it follows OMIT_SLIRP and OMIT_LUA.
.PHONY: build/netbe.pc
build/netbe.pc:
	@mkdir -p build
	printf '%s\n' 'prefix=$(PREFIX)' 'includedir=$${prefix}/include' 'libdir=$${prefix}/lib' '' \
	  'Name: netbe' 'Description: the host side of a virtual NIC, for virtual machine managers' \
	  'Version: $(NETBE_VERSION_STR)' 'Requires: $(strip $(PC_REQUIRES))' \
	  'Cflags: -I$${includedir}' 'Libs: $(strip -L$${libdir} -lnetbe -lpthread $(OSLIBS))' >$@

# The README's link line: examples/wire.c built against a tree installed
# under a temporary DESTDIR, through pkg-config alone.
install-check: libnetbe.a lua/netbe.so build/netbe.pc
	@dest=$$(mktemp -d) && trap 'rm -rf "$$dest"' EXIT && \
	 $(MAKE) --no-print-directory -s install DESTDIR=$$dest PREFIX=/usr/local >/dev/null && \
	 export PKG_CONFIG_PATH=$$dest/usr/local/lib/pkgconfig && \
	 $(CC) -o $$dest/wire examples/wire.c $$(pkg-config --define-variable=prefix=$$dest/usr/local --cflags --libs netbe) && \
	 { $$dest/wire null 'tap0,colour=blue' 2>&1 | grep -q colour; } && \
	 echo "install-check: examples/wire.c links through pkg-config --cflags --libs netbe"
