# Every dependency comes from Debian 12's apt (see `make deps`); nothing is vendored or downloaded.
find_package(Threads REQUIRED)
find_package(CAF 0.17 REQUIRED)
find_package(Protobuf REQUIRED)
find_package(OpenSSL REQUIRED)
# Header-only Boost.Asio (with asio::ssl over OpenSSL) under the cluster transport's sockets.
find_package(Boost 1.74 REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(prometheus-cpp REQUIRED)
find_package(CLI11 REQUIRED)
find_package(SQLite3 REQUIRED)
find_package(PostgreSQL REQUIRED)

# The allocator of the executables we ship and measure (`af` and the benchmarks):
# tcmalloc from gperftools (apt: libgoogle-perftools-dev). glibc's malloc makes a worker that
# frees what another allocated (every message between agents on different scheduler threads)
# take the allocating thread's arena lock; under contention that is a futex sleep and a
# cross-CPU wake-up each time (docs/architecture.md, "Memory allocator"). The libraries do not
# link it: an application embedding AgentFlow chooses its own allocator. Sanitizer builds keep
# glibc's (ASan replaces malloc).
set(AF_ALLOCATOR "tcmalloc" CACHE STRING "malloc of the af binary, benchmarks and examples: tcmalloc or system")
set_property(CACHE AF_ALLOCATOR PROPERTY STRINGS tcmalloc system)
add_library(af_allocator INTERFACE)
if(AF_ALLOCATOR STREQUAL "tcmalloc" AND NOT AF_SANITIZE)
  find_library(AF_TCMALLOC_LIB NAMES tcmalloc_minimal)
  if(NOT AF_TCMALLOC_LIB)
    message(FATAL_ERROR "tcmalloc_minimal not found: install libgoogle-perftools-dev (make deps), "
                        "or configure with -DAF_ALLOCATOR=system")
  endif()
  # --no-as-needed: nothing calls into it by name; it replaces malloc and free.
  target_link_libraries(af_allocator INTERFACE -Wl,--push-state,--no-as-needed ${AF_TCMALLOC_LIB}
    -Wl,--pop-state)
elseif(NOT AF_ALLOCATOR STREQUAL "tcmalloc" AND NOT AF_ALLOCATOR STREQUAL "system")
  message(FATAL_ERROR "AF_ALLOCATOR must be tcmalloc or system, not '${AF_ALLOCATOR}'")
endif()
