# The Debian package (`make deb`): CPack's DEB generator over the install() rules of
# cmake/Install.cmake, configured with CMAKE_INSTALL_PREFIX=/usr. Why CPack rather than a debian/
# directory and dpkg-buildpackage: the install() rules already say what goes where (for
# `cmake --install` too), the version is CMake's project version with nothing to keep in step (a
# debian/changelog would be a second place), and the package is built by the same CMake build as
# everything else (scripts/deb.sh: a build tree of its own, configured for /usr). What debhelper would have added is here by hand: dependencies from
# dpkg-shlibdeps, md5sums, stripped binaries with a -dbgsym package, conffiles, and the
# maintainer scripts of deploy/debian (system user, systemd hooks). `lintian` runs on the result
# (tests/deploy/deb_test.sh); deploy/debian/lintian-overrides explains what it still reports.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME outboxd)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "transactional outbox relay from PostgreSQL to Kafka")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
"outboxd publishes transactional-outbox events from PostgreSQL to Kafka by
tailing the write-ahead log through a logical replication slot (pgoutput).
Each committed outbox row becomes a Protobuf envelope keyed by its UUID; the
slot advances only after Kafka acknowledged the event, so no event is lost.

This package holds outboxd, outboxd-tail (prints envelopes from Kafka), a
sandboxed systemd unit (neither enabled nor started until configured), an
example configuration in /etc/outboxd and the SQL toolkit in
/usr/share/outboxd/sql.")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)   # outboxd_<version>_amd64.deb
# Shared-library dependencies computed by dpkg-shlibdeps from what the binaries link; adduser
# for the postinst.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
# Stripped binaries in the package, their debug information in outboxd-dbgsym_<version>_amd64.ddeb
# (matched by build id: install it to read a core dump). Not CPACK_STRIP_FILES: that would strip
# before the debug information is split off.
set(CPACK_DEBIAN_DEBUGINFO_PACKAGE ON)
# Absolute paths (/etc/outboxd, the unit directory) go through DESTDIR into the package.
set(CPACK_SET_DESTDIR ON)
set(CPACK_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/deploy/debian/conffiles
    ${PROJECT_SOURCE_DIR}/deploy/debian/postinst
    ${PROJECT_SOURCE_DIR}/deploy/debian/prerm
    ${PROJECT_SOURCE_DIR}/deploy/debian/postrm)
include(CPack)
