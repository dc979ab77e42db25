# What `cmake --install` (and `make install`) puts under the prefix:
#   include/hetmm.h
#   lib/libhetmm.a, lib/libhetmm.so -> .so.MAJOR -> .so.MAJOR.MINOR.PATCH
#   lib/pkgconfig/hetmm.pc                 pkg-config --cflags --libs hetmm
#   lib/cmake/hetmm/hetmmConfig*.cmake     find_package(hetmm): hetmm::hetmm
#                                          (shared), hetmm::hetmm_static
#   bin/hetmm                              the CLI (top-level builds)
# Everything is found relative to where it was installed, so --prefix and
# DESTDIR at install time work without configuring again.
include(CMakePackageConfigHelpers)

set(HETMM_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/hetmm)

install(TARGETS hetmm_shared hetmm_static EXPORT hetmmTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_SOURCE_DIR}/include/hetmm.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT hetmmTargets NAMESPACE hetmm::
  DESTINATION ${HETMM_CMAKE_DIR})

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/hetmmConfig.cmake.in
  ${PROJECT_BINARY_DIR}/hetmmConfig.cmake
  INSTALL_DESTINATION ${HETMM_CMAKE_DIR})
# 0.x: a minor release may change the API, so only the same minor matches.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/hetmmConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/hetmmConfig.cmake
  ${PROJECT_BINARY_DIR}/hetmmConfigVersion.cmake
  DESTINATION ${HETMM_CMAKE_DIR})

# pkg-config: the prefix is found from the .pc file's own place.
file(RELATIVE_PATH HETMM_PC_TO_PREFIX
  /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" HETMM_PC_TO_PREFIX "${HETMM_PC_TO_PREFIX}")
if(HETMM_URING_LIB)
  set(HETMM_PC_URING -luring)
endif()
configure_file(${CMAKE_CURRENT_LIST_DIR}/hetmm.pc.in
  ${PROJECT_BINARY_DIR}/hetmm.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/hetmm.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
