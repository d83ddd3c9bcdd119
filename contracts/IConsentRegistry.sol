// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/**
 * @title Vellum consent registry
 * @notice The consents patients gave (FHIR R4 `Consent` resources, reduced to rules over fixed
 * enumerations) and the actors allowed to act on them, with the access decision every Vellum
 * server must follow: {decide}. The design is `docs/consent.md`; bit positions of the
 * enumerations below are on-chain meaning and never change.
 *
 * Nothing here identifies anyone: patients, actors and consent ids are keyed pseudonyms
 * (`HMAC-SHA-256(consentKey, "Patient/123")`, 32 bytes). A patient may hold a wallet
 * ({registerWallet}); with it the patient revokes ({revokeBySig}) or grants ({grantBySig}) a
 * consent by EIP-712 signature (domain name "VellumConsentRegistry", version "1"), which anyone
 * may relay. A consent the patient revoked by signature is LOCKED: the custodian cannot put it
 * back in force; only a patient-signed grant lifts the lock.
 *
 * Enumerations:
 *
 * - resource class: index into the alphabetical list of R4 resource types; `classes` bit i;
 * - action: `access, collect, use, disclose, correct` (0..4); `actions` bit i;
 * - purpose: v3 PurposeOfUse `TREAT, ETREAT, HPAYMT, HRESCH, PUBHLTH, HOPERAT, CAREMGT, PATRQT,
 *   FAMRQT, COVERAGE, HMARKT, HDIRECT, HSYSADMIN, HTEST, CLINTRCH, HLEGAL, HQUALIMP, HCOMPL,
 *   HACCRED, HOUTCOMS` (0..19); `purposes` bit i. ETREAT (1) is emergency treatment.
 *
 * A zero mask means "every value".
 */
interface IConsentRegistry {
    /// @notice A consent's state. `None`: never written.
    enum Status {
        None,
        Active,
        Revoked
    }

    /// @notice The answer of {decide}. Only `Permit` and `BreakGlass` allow access.
    enum Decision {
        NoConsent,
        Permit,
        Deny,
        BreakGlass,
        ActorNotApproved
    }

    /**
     * @notice One provision of a consent. `rules[0]` is the base provision, `rules[1..]` its
     * exceptions; an exception's empty `actors`, zero masks and zero `start`/`end` inherit the
     * base's (`permit` never inherits).
     */
    struct Rule {
        /// provision.type: permit (true) or deny (false)
        bool permit;
        /// actor keys (at most 8); empty = any actor
        bytes32[] actors;
        /// resource classes, bit i = R4 resource type i; 0 = all
        uint256 classes;
        /// actions, bit i = action i; 0 = all
        uint16 actions;
        /// purposes of use, bit i = purpose i; 0 = all
        uint64 purposes;
        /// unix seconds, inclusive; 0 = unbounded
        uint64 start;
        /// unix seconds, inclusive; 0 = unbounded
        uint64 end;
    }

    /// @notice Consent `id` of `patient` is in force with new rules (by the custodian, or by the patient's signature).
    event ConsentPut(bytes32 indexed id, bytes32 indexed patient, bool bySignature);

    /// @notice Consent `id` of `patient` was revoked (by the custodian, or by the patient's signature, which locks it).
    event ConsentRevoked(bytes32 indexed id, bytes32 indexed patient, bool bySignature);

    /// @notice `actor` may now be permitted access; with `emergency` it may also break the glass.
    event ActorApproved(bytes32 indexed actor, bool emergency);

    /// @notice `actor` is no longer approved: no permit applies to it any more.
    event ActorApprovalRevoked(bytes32 indexed actor);

    /// @notice `wallet` signs for `patient` from now on (the zero address: nobody does).
    event WalletRegistered(bytes32 indexed patient, address wallet);

    /// @notice `actor` read data of class `resourceClass` of `patient` by break-glass, for `purpose`.
    event EmergencyAccess(bytes32 indexed patient, bytes32 indexed actor, uint8 resourceClass, uint8 purpose);

    /// @notice The registry was deployed without an administrator.
    error ConsentRegistryZeroAdmin();

    /// @notice A consent id, patient or actor key is zero; keys are HMAC outputs, never zero.
    error ConsentZeroKey();

    /// @notice A consent needs at least its base rule.
    error ConsentNoRules();

    /// @notice `count` rules given; at most `max` (a base and 8 exceptions).
    error ConsentTooManyRules(uint256 count, uint256 max);

    /// @notice Rule `ruleIndex` names `count` actors; at most `max`.
    error ConsentTooManyActors(uint256 ruleIndex, uint256 count, uint256 max);

    /// @notice `patient` already has `max` consents in force.
    error ConsentTooManyConsents(bytes32 patient, uint256 max);

    /// @notice {decide} was given `count` request actors; at most `max`.
    error ConsentTooManyRequestActors(uint256 count, uint256 max);

    /// @notice The patient revoked consent `id` by signature; only their signed grant restores it.
    error ConsentLockedByPatient(bytes32 id);

    /// @notice A permit rule names `actor`, which is not approved.
    error ConsentActorNotApproved(bytes32 actor);

    /// @notice Consent `id` exists for another patient.
    error ConsentPatientMismatch(bytes32 id);

    /// @notice Consent `id` was never written.
    error ConsentUnknown(bytes32 id);

    /// @notice The signature's `deadline` has passed.
    error ConsentSignatureExpired(uint256 deadline);

    /// @notice The signature is for nonce `given`, but the patient's next nonce is `expected`.
    error ConsentBadNonce(uint256 expected, uint256 given);

    /// @notice `patient` has no registered wallet, so nobody can sign for them.
    error ConsentNoWallet(bytes32 patient);

    /// @notice The signature is malformed or not by the patient's wallet.
    error ConsentBadSignature();

    /// @notice The role that mirrors consents, registers wallets and records break-glass accesses.
    function CUSTODIAN_ROLE() external view returns (bytes32);

    /// @notice The role that approves actors.
    function APPROVER_ROLE() external view returns (bytes32);

    /**
     * @notice Approves `actor`; with `emergency` it may also break the glass (purpose ETREAT).
     * Approving again replaces the emergency flag.
     *
     * Emits an {ActorApproved} event.
     *
     * Requirements:
     *
     * - the caller must have {APPROVER_ROLE} (else `AccessControlUnauthorizedAccount`);
     * - `actor` must not be zero ({ConsentZeroKey}).
     */
    function approveActor(bytes32 actor, bool emergency) external;

    /**
     * @notice Withdraws `actor`'s approval (and emergency flag): no permit rule applies to it
     * any more, and it cannot break the glass. Consents naming it stay as they are.
     *
     * Emits an {ActorApprovalRevoked} event.
     *
     * Requirements:
     *
     * - the caller must have {APPROVER_ROLE}.
     */
    function revokeApproval(bytes32 actor) external;

    /// @notice Whether `actor` is approved, and whether with the emergency flag.
    function approvalOf(bytes32 actor) external view returns (bool approved, bool emergency);

    /**
     * @notice Records `wallet` as the address that signs for `patient` (zero: none).
     *
     * Emits a {WalletRegistered} event.
     *
     * Requirements:
     *
     * - the caller must have {CUSTODIAN_ROLE};
     * - `patient` must not be zero ({ConsentZeroKey}).
     */
    function registerWallet(bytes32 patient, address wallet) external;

    /// @notice The wallet that signs for `patient`; the zero address if none.
    function walletOf(bytes32 patient) external view returns (address);

    /// @notice The nonce the next signature of `patient` must carry.
    function nonces(bytes32 patient) external view returns (uint256);

    /**
     * @notice Creates consent `id` of `patient`, or replaces its rules; either way it is then
     * Active. A new consent takes its place after the patient's other consents.
     *
     * Emits a {ConsentPut} event with `bySignature` false.
     *
     * Requirements:
     *
     * - the caller must have {CUSTODIAN_ROLE};
     * - `id` and `patient` must not be zero ({ConsentZeroKey});
     * - `id` must not belong to another patient ({ConsentPatientMismatch});
     * - the patient must not have revoked `id` by signature ({ConsentLockedByPatient});
     * - 1 to 9 rules ({ConsentNoRules}, {ConsentTooManyRules}), each naming at most 8 actors
     *   ({ConsentTooManyActors});
     * - every actor a permit rule names (after inheritance) must be approved ({ConsentActorNotApproved});
     * - if `id` is not in force, the patient must have fewer than 64 consents in force
     *   ({ConsentTooManyConsents}).
     */
    function putConsent(bytes32 id, bytes32 patient, Rule[] calldata rules) external;

    /**
     * @notice Revokes consent `id`. Revoking a revoked consent changes nothing and emits nothing.
     *
     * Emits a {ConsentRevoked} event with `bySignature` false.
     *
     * Requirements:
     *
     * - the caller must have {CUSTODIAN_ROLE};
     * - `id` must exist ({ConsentUnknown}).
     */
    function revokeConsent(bytes32 id) external;

    /**
     * @notice Revokes consent `id` on the patient's EIP-712 signature of
     * `Revoke(bytes32 consentId,uint256 nonce,uint256 deadline)` and locks it: the custodian
     * cannot put it back. Anyone may send this.
     *
     * Emits a {ConsentRevoked} event with `bySignature` true.
     *
     * Requirements:
     *
     * - `block.timestamp <= deadline` ({ConsentSignatureExpired});
     * - `id` must exist ({ConsentUnknown});
     * - `nonce` must be the patient's next nonce ({ConsentBadNonce}); it is then used up;
     * - the patient must have a wallet ({ConsentNoWallet}) and `signature` must be its
     *   ({ConsentBadSignature}).
     */
    function revokeBySig(bytes32 id, uint256 nonce, uint256 deadline, bytes calldata signature) external;

    /**
     * @notice Creates or replaces consent `id` of `patient` on the patient's EIP-712 signature of
     * `Grant(bytes32 consentId,bytes32 patient,Rule[] rules,uint256 nonce,uint256 deadline)` with
     * `Rule(bool permit,bytes32[] actors,uint256 classes,uint16 actions,uint64 purposes,uint64 start,uint64 end)`,
     * and lifts the patient's lock. Anyone may send this.
     *
     * Emits a {ConsentPut} event with `bySignature` true.
     *
     * Requirements: those of {putConsent} except the role and the lock, and those of
     * {revokeBySig} on the deadline, nonce and signature.
     */
    function grantBySig(
        bytes32 id,
        bytes32 patient,
        Rule[] calldata rules,
        uint256 nonce,
        uint256 deadline,
        bytes calldata signature
    ) external;

    /**
     * @notice Records that `actor` read data of class `resourceClass` of `patient` by
     * break-glass, for `purpose`.
     *
     * Emits an {EmergencyAccess} event.
     *
     * Requirements:
     *
     * - the caller must have {CUSTODIAN_ROLE}.
     */
    function recordEmergencyAccess(bytes32 patient, bytes32 actor, uint8 resourceClass, uint8 purpose) external;

    /**
     * @notice Consent `id`: its patient, status, whether the patient locked it, and its rules.
     * An unknown id gives status `None` and nothing else.
     */
    function consentOf(bytes32 id)
        external
        view
        returns (bytes32 patient, Status status, bool lockedByPatient, Rule[] memory rules);

    /// @notice The ids of every consent of `patient` ever written (revoked ones included), in the order first written.
    function consentsOf(bytes32 patient) external view returns (bytes32[] memory);

    /**
     * @notice The access decision for a request by `actors` (all the requester's identities,
     * at most 4) for data of class `resourceClass` of `patient`, for `action` and `purpose`, at
     * unix time `time`; with the consent that decided it (zero for the last three outcomes).
     *
     * A rule (after inheritance) matches when `time` is within `[start, end]`, the class,
     * action and purpose bits are set (or the mask is zero), and some request actor is in
     * `actors` (or `actors` is empty); a permit rule needs that actor to be approved. A
     * consent's verdict is its last matching exception, else its base rule if it matches.
     * Over the patient's Active consents, in the order first written:
     *
     * 1. `Deny` with the first denying consent. Break-glass (purpose ETREAT and a request actor
     *    approved with the emergency flag) ignores a deny whose rule's `purposes` (after
     *    inheritance) is zero or lacks the ETREAT bit;
     * 2. `Permit` with the first permitting consent;
     * 3. `BreakGlass` when break-glass applies;
     * 4. `ActorNotApproved` when no request actor is approved;
     * 5. `NoConsent`.
     *
     * Requirements:
     *
     * - at most 4 request actors ({ConsentTooManyRequestActors}).
     */
    function decide(
        bytes32 patient,
        bytes32[] calldata actors,
        uint8 resourceClass,
        uint8 action,
        uint8 purpose,
        uint64 time
    ) external view returns (Decision decision, bytes32 consentId);

    /// @notice Whether {decide} answers `Permit` or `BreakGlass`.
    function isPermitted(
        bytes32 patient,
        bytes32[] calldata actors,
        uint8 resourceClass,
        uint8 action,
        uint8 purpose,
        uint64 time
    ) external view returns (bool);
}
