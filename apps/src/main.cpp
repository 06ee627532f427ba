// The `af` command: every subcommand lives in the agentflow::cli library (apps/src/cli.cpp).
#include "af/cli.hpp"

int main(int argc, char** argv) { return af::cli::main(argc, argv); }
