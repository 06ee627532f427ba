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
