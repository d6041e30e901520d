# twofold — the two commands of the README, and the pieces they are made of.
CARGO ?= cargo

.PHONY: all deps build test lint demo bench bench-scale bench-fleet fuzz package package-test clean

all: build

deps:
	scripts/install-deps.sh test

build: deps
	$(CARGO) build --workspace

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Every test: unit tests, then end-to-end tests against a private bus,
# twofoldd, real libpam and oathtool. Needs root (test users, runuser).
test: deps lint
	$(CARGO) build --workspace
	$(CARGO) test --workspace
	scripts/fuzz.sh $(FUZZ_SECONDS)
	scripts/package-test.sh

# Each libFuzzer target for FUZZ_SECONDS (make test: 10 s each, on the seed
# corpus in fuzz/corpus); `make fuzz FUZZ_SECONDS=3600` is a long run.
FUZZ_SECONDS ?= 10
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

# A private bus, twofoldd, a demo user, enrollment and a PAM login with a code.
# Touches nothing of the host's own login setup.
demo: deps
	$(CARGO) build --workspace
	target/debug/twofold-demo

# pam_twofold beside pam_google_authenticator and pam_oath (one at a time,
# then 1/8/64/256 logins in flight, a race check, the module's footprint),
# the bus's share of a login, twofoldd's memory around enrollments and
# floods, then whole SSH logins with each (release
# build; not part of the test suite). TWOFOLD_BENCH_LOGINS=N changes the
# number of sequential logins.
bench:
	scripts/install-deps.sh bench
	$(CARGO) build --release --workspace
	# The module as packaged: alone, without the daemon's zbus features.
	$(CARGO) build --release -p pam-twofold
	target/release/twofold-bench
	target/release/twofold-bench floor 2000
	target/release/twofold-bench memory
	target/release/twofold-bench ssh 60

# The daemon with 100, 100,000 and 1,000,000 enrolled users (about 5 minutes
# and 5 GB of disk in /tmp for the fixture, removed at the end).
bench-scale:
	scripts/install-deps.sh bench
	$(CARGO) build --release --workspace
	$(CARGO) build --release -p pam-twofold
	target/release/twofold-bench scale

# A fleet on one PostgreSQL server the run starts: logins beside the file
# store, three daemons at 8 and 64 in flight, then 1,000,000 users in the
# database (about 6 minutes; docs/performance.md, "Fleet").
bench-fleet:
	scripts/install-deps.sh bench
	$(CARGO) build --release --workspace
	$(CARGO) build --release -p pam-twofold
	target/release/twofold-bench fleet 1200
	target/release/twofold-bench fleet-scale 100 1000000

# The Debian package and the RPM, in target/packages (cargo-deb, installed
# once if missing, and rpmbuild).
package:
	scripts/package.sh

# Builds the packages and tests them: the unit's exposure, the RPM's file
# list, lintian and rpmlint, and the .deb installed, used, upgraded and
# purged in a scratch Debian 12 root.
# Needs root and Debian's mirror (the bootstrap is cached in /var/cache).
package-test:
	scripts/package-test.sh

clean:
	$(CARGO) clean
