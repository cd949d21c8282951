"""A module the zygote preloads: state a run changes here must not reach the next run."""

visits: list[str] = []
