"""Hand model: MANO through smplx for both hands, and the procedural stand-in MANO model."""
