# `cmake --install` puts headers, libraries and the `agentflow` CMake package under the prefix.
include(CMakePackageConfigHelpers)
set(AF_INSTALLED_TARGETS af_proto af_runtime af_supervision af_cli)
if(TARGET af_persistence)
  list(APPEND AF_INSTALLED_TARGETS af_persistence af_actors af_sim)
endif()
install(TARGETS ${AF_INSTALLED_TARGETS} EXPORT agentflowTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT agentflowTargets NAMESPACE agentflow::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/agentflow)
configure_package_config_file(cmake/agentflowConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/agentflowConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/agentflow)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/agentflowConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/agentflowConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/agentflowConfigVersion.cmake cmake/FindCAF.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/agentflow)
