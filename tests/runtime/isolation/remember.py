"""Reports what it finds left over from earlier runs, then leaves traces of its own."""

import json
import sys

found = {
    "shared_state_preloaded": "shared_state" in sys.modules,
    "own_global_before": globals().get("left_by_an_earlier_run"),
    "helper_imported_before": "helper_module" in sys.modules,
}
import shared_state  # noqa: E402

found["visits_before"] = list(shared_state.visits)
shared_state.visits.append("visited")
left_by_an_earlier_run = "yes"
import helper_module  # noqa: E402

assert helper_module.IMPORTED
print(json.dumps(found))
