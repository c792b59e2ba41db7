"""Prior layers: NLCD prior, vector layers, fused and learned priors."""
