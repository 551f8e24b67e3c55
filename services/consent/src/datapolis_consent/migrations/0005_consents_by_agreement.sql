-- The consents granted within an agreement, which end with it: what an
-- agreement's revocation, termination or expiry looks up in its transaction.
CREATE INDEX subject_consents_agreement ON subject_consents (agreement_id)
    WHERE status = 'granted';
