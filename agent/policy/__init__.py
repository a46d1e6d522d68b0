"""The policy: the LLM whose weights Lineage evolves, loaded offline and run behind one backend
interface (`backend.PolicyBackend`), with per-row low-rank perturbations for a whole ES population."""
