"""The call simulator: Twilio's side of a phone call, for trying the product without a phone."""
