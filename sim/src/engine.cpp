// The simulation engine (being written): see af/sim/simulation.hpp.
#include "af/sim/simulation.hpp"

namespace af::sim {

expected<report> run(const scenario& sc, const run_options&) {
  return error{errc::internal, "scenario '" + sc.name + "': the simulation engine is not built yet"};
}

} // namespace af::sim
