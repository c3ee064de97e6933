# What `cmake --install` puts where, and so what the Debian package holds (cmake/Package.cmake
# packages exactly these rules). Paths follow GNUInstallDirs: with CMAKE_INSTALL_PREFIX=/usr (the
# package) the config goes to /etc/outboxd and the state directory is /var/lib/outboxd; with the
# default /usr/local, to /usr/local/etc/outboxd and /usr/local/var/lib/outboxd.
#
#   bin/outboxd, bin/outboxd-tail
#   <sysconfdir>/outboxd/outboxd.toml, outboxd.env     example config and secrets file (conffiles)
#   <systemd unit dir>/outboxd.service                   ExecStart and paths of this prefix
#   share/outboxd/sql/*.sql                              the SQL toolkit (outbox.sql, role.sql, ...)
#   share/doc/outboxd/                                   README, the docs, copyright, changelog
#   share/man/man1/outboxd.1, outboxd-tail.1
include(GNUInstallDirs)

# systemd's own answer for where unit files go (/lib/systemd/system on Debian 12,
# /usr/lib/systemd/system on 13) when installing into /usr; under another prefix, that prefix's
# lib/systemd/system (systemd also reads /usr/local/lib/systemd/system).
set(_outboxd_unitdir "${CMAKE_INSTALL_PREFIX}/lib/systemd/system")
if(CMAKE_INSTALL_PREFIX STREQUAL "/usr")
  pkg_get_variable(_outboxd_systemd_unitdir systemd systemdsystemunitdir)
  if(_outboxd_systemd_unitdir)
    set(_outboxd_unitdir "${_outboxd_systemd_unitdir}")
  endif()
endif()
set(OUTBOXD_SYSTEMD_UNITDIR "${_outboxd_unitdir}" CACHE PATH "Where outboxd.service is installed")

set(OUTBOXD_CONFDIR "${CMAKE_INSTALL_FULL_SYSCONFDIR}/outboxd")
set(OUTBOXD_STATEDIR "${CMAKE_INSTALL_FULL_LOCALSTATEDIR}/lib/outboxd")

install(TARGETS outboxd outboxd-tail RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# The unit, with this prefix's paths (deploy/systemd/outboxd.service.in).
configure_file(${PROJECT_SOURCE_DIR}/deploy/systemd/outboxd.service.in
               ${PROJECT_BINARY_DIR}/deploy/outboxd.service @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/deploy/outboxd.service DESTINATION ${OUTBOXD_SYSTEMD_UNITDIR})

# The example config and the secrets file. An existing file is kept, so that a second
# `cmake --install` never overwrites an operator's config (the package's files are conffiles:
# dpkg asks before replacing an edited one).
install(CODE "
  foreach(spec \"outboxd.toml;0644\" \"outboxd.env;0600\")
    list(GET spec 0 name)
    list(GET spec 1 mode)
    set(dest \"\$ENV{DESTDIR}${OUTBOXD_CONFDIR}/\${name}\")  # file(INSTALL) adds DESTDIR itself
    if(EXISTS \"\${dest}\")
      message(STATUS \"Keeping existing: \${dest}\")
    else()
      if(mode STREQUAL \"0600\")
        set(perms OWNER_READ OWNER_WRITE)
      else()
        set(perms OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
      endif()
      file(INSTALL DESTINATION \"${OUTBOXD_CONFDIR}\" TYPE FILE PERMISSIONS \${perms}
           FILES \"${PROJECT_SOURCE_DIR}/deploy/systemd/\${name}\")
    endif()
  endforeach()
")

# What lintian reports that is meant so, each with its reason (deploy/debian/lintian-overrides).
install(FILES ${PROJECT_SOURCE_DIR}/deploy/debian/lintian-overrides
        DESTINATION ${CMAKE_INSTALL_DATADIR}/lintian/overrides RENAME outboxd)

install(FILES
          ${PROJECT_SOURCE_DIR}/sql/outbox.sql ${PROJECT_SOURCE_DIR}/sql/role.sql
          ${PROJECT_SOURCE_DIR}/sql/messages.sql ${PROJECT_SOURCE_DIR}/sql/purge.sql
          ${PROJECT_SOURCE_DIR}/sql/monitoring.sql
        DESTINATION ${CMAKE_INSTALL_DATADIR}/outboxd/sql)

# Man pages and the Debian changelog, compressed as Debian wants them (gzip -9n: no name or time
# stamp in the header), at configure time; a change to a source reconfigures.
string(TIMESTAMP OUTBOXD_CHANGELOG_DATE "%a, %d %b %Y %H:%M:%S +0000" UTC)  # SOURCE_DATE_EPOCH wins
set(CPACK_PACKAGE_CONTACT "outboxd maintainers <dev@outboxd.invalid>" CACHE STRING
    "Maintainer of the Debian package (its control file and changelog)")
configure_file(${PROJECT_SOURCE_DIR}/deploy/debian/changelog.in ${PROJECT_BINARY_DIR}/deploy/changelog @ONLY)
foreach(src ${PROJECT_SOURCE_DIR}/docs/man/outboxd.1 ${PROJECT_SOURCE_DIR}/docs/man/outboxd-tail.1
            ${PROJECT_BINARY_DIR}/deploy/changelog)
  get_filename_component(name ${src} NAME)
  execute_process(COMMAND gzip -9nc ${src} OUTPUT_FILE ${PROJECT_BINARY_DIR}/deploy/${name}.gz
                  COMMAND_ERROR_IS_FATAL ANY)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${src})
endforeach()
install(FILES ${PROJECT_BINARY_DIR}/deploy/outboxd.1.gz ${PROJECT_BINARY_DIR}/deploy/outboxd-tail.1.gz
        DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)

install(FILES
          ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/docs/configuration.md
          ${PROJECT_SOURCE_DIR}/docs/operations.md ${PROJECT_SOURCE_DIR}/docs/deployment.md
          ${PROJECT_SOURCE_DIR}/docs/metrics.md ${PROJECT_SOURCE_DIR}/docs/migrating-from-debezium.md
          ${PROJECT_SOURCE_DIR}/deploy/debian/copyright ${PROJECT_BINARY_DIR}/deploy/changelog.gz
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
